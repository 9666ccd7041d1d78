"""The device itself: `config` (device.conf, the device UUID), `stats` (disk and memory),
`logs` (the daemon's log files for GET_LAST_LOG), `power` (reboot/power-off through systemd)."""
