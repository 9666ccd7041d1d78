"""Process control: prctl, fd ranges, pidfd signals, the PID-namespace reboot."""

from __future__ import annotations

import ctypes
import errno
import os

from cmld.linux.libc import LIBC, check, syscall

PR_SET_PDEATHSIG = 1
PR_SET_DUMPABLE = 4
PR_CAPBSET_READ = 23
PR_CAPBSET_DROP = 24
PR_SET_CHILD_SUBREAPER = 36
PR_SET_SECUREBITS = 28
PR_SET_NO_NEW_PRIVS = 38
PR_CAP_AMBIENT = 47
PR_CAP_AMBIENT_CLEAR_ALL = 4
SECBIT_NO_SETUID_FIXUP = 1 << 2

SYS_CLOSE_RANGE = 436  # x86-64
SYS_PIDFD_SEND_SIGNAL = 424
CLOSE_RANGE_CLOEXEC = 1 << 2


def prctl(option: int, arg2: int = 0, arg3: int = 0, arg4: int = 0, arg5: int = 0) -> int:
    return check(LIBC.prctl(ctypes.c_int(option), ctypes.c_ulong(arg2), ctypes.c_ulong(arg3),
                            ctypes.c_ulong(arg4), ctypes.c_ulong(arg5)), "prctl")


def close_range(first: int, last: int = 0xFFFFFFFF, flags: int = 0) -> None:
    check(syscall(SYS_CLOSE_RANGE, ctypes.c_uint(first), ctypes.c_uint(last), ctypes.c_uint(flags)), "close_range")


def pidfd_send_signal(pidfd: int, sig: int) -> None:
    check(syscall(SYS_PIDFD_SEND_SIGNAL, ctypes.c_int(pidfd), ctypes.c_int(sig), None, ctypes.c_uint(0)),
          "pidfd_send_signal")


# reboot(2)
SYS_REBOOT = 169
LINUX_REBOOT_MAGIC1 = 0xFEE1DEAD
LINUX_REBOOT_MAGIC2 = 672274793
LINUX_REBOOT_CMD_RESTART = 0x01234567
LINUX_REBOOT_CMD_HALT = 0xCDEF0123
LINUX_REBOOT_CMD_POWER_OFF = 0x4321FEDC


def reboot_pid_namespace(cmd: int, not_in: int) -> None:
    """reboot(2) for a process inside a container's PID namespace, where the kernel ends that
    namespace instead of the machine (its init dies as by SIGHUP for RESTART, SIGINT for HALT and
    POWER_OFF) and the caller exits. `not_in` is the inode of the PID namespace the caller came
    from (cmld's): refused (OSError EPERM) if the caller is still in it, never the machine's
    reboot."""
    if cmd not in (LINUX_REBOOT_CMD_RESTART, LINUX_REBOOT_CMD_HALT, LINUX_REBOOT_CMD_POWER_OFF):
        raise OSError(errno.EINVAL, f"reboot command {cmd:#x} is not one that ends a PID namespace")
    if os.stat("/proc/self/ns/pid").st_ino == not_in:
        raise OSError(errno.EPERM, "reboot(2) refused: this process is in cmld's own PID namespace")
    check(syscall(SYS_REBOOT, ctypes.c_uint(LINUX_REBOOT_MAGIC1), ctypes.c_uint(LINUX_REBOOT_MAGIC2),
                  ctypes.c_uint(cmd), None), "reboot")
