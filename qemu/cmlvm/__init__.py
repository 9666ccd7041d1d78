"""Builds and boots the system-test VM: Debian kernel + mmdebstrap rootfs + the suite, under QEMU
with OVMF and an swtpm TPM 2.0, so device-mapper, cgroup v2, systemd and measured boot are real."""
