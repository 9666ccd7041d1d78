"""cmld, the container management daemon (the original's daemon/).

Read it top down; imports only point down this list (tests/unit/test_architecture.py checks it):

| package | what |
|---|---|
| `main` | command line, wiring, the daemon's life |
| `control/` | the control socket: server, access policy, dispatcher, one handler file per command family |
| `daemon` | `Cmld`: everything cmld knows about the device (configs, stores, clients, the runtime) |
| `runtime/` | the lifecycle: transition table, compartment (one container's start/stop/exit), registry, crash records |
| `modules/` | the lifecycle contract, the module order, one file per container aspect (c_user, c_vol, ...) |
| `containers/`, `guestos/` | container configs and keys; GuestOS store, install, CAs |
| `device/`, `clients/` | device.conf, stats, logs, power, the cservice binary; the scd client |
| `audit/` | audit records: journal (hash chain, signed checkpoints), queues and the ACK pull, forwarding |
| `cgroups/`, `seccomp/`, `launcher/` | cgroup v1/v2 drivers, seccomp filter and supervisor, the exec'd launcher |
| `linux/` | the one ctypes layer |
| `errors` | `CmldError`, the base of every refusal, carrying its reply code |
"""
