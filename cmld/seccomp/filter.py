"""The container's seccomp filter, installed by the container's first process right before execve
of init (c_seccomp `start_pre_exec_child_early`).

Import-light on purpose (pyseccomp, os, the capability module only): this runs on the start path of every
container. The filter is a deny-list over a default ALLOW:

* wrong architecture -> KILL_PROCESS (libseccomp's bad-arch action). On x86-64 libseccomp also
  sends every x32 syscall (nr with bit 0x40000000) to the bad-arch action, so x32 -> KILL_PROCESS;
  without that a process could reach the same kernel entry points under numbers the rules below
  never match.
* mknod / mknodat whose mode's file type is S_IFCHR or S_IFBLK -> NOTIFY (cmld decides and creates
  the node). Regular files, FIFOs and sockets stay plain ALLOW and never reach cmld.
* clock_settime, clock_adjtime, adjtimex, settimeofday -> NOTIFY, always: the supervisor refuses
  them unless the container may set the system time.
"""

from __future__ import annotations

import os

import pyseccomp  # type: ignore[import-untyped]

from cmld.linux import caps

X32_SYSCALL_BIT = 0x40000000
S_IFMT = 0o170000
DEVICE_TYPES = (0o020000, 0o060000)  # S_IFCHR, S_IFBLK

# syscall name -> index of its mode argument
MKNOD_MODE_ARG = {"mknod": 1, "mknodat": 2}
TIME_SYSCALLS = ("clock_settime", "clock_adjtime", "adjtimex", "settimeofday")


CAP_SYS_ADMIN = 21


def _has_sys_admin() -> bool:
    """CAP_SYS_ADMIN in the effective set (of the current user namespace, which is what the kernel
    checks for loading a filter without no_new_privs)."""
    try:
        return caps.has_effective(CAP_SYS_ADMIN)
    except OSError:
        return False


def build_filter(*, allow_system_time: bool) -> pyseccomp.SyscallFilter:
    """The filter, not loaded yet (tests export it as BPF).

    `allow_system_time` does not change the filter: the time syscalls are notified either way, so
    that a container holding CAP_SYS_TIME still cannot set the host clock when it is not allowed to
    (the supervisor answers EPERM)."""
    del allow_system_time
    flt = pyseccomp.SyscallFilter(pyseccomp.ALLOW)
    flt.set_attr(pyseccomp.Attr.ACT_BADARCH, pyseccomp.KILL_PROCESS)
    # Loading a filter needs no_new_privs or CAP_SYS_ADMIN. The launcher has CAP_SYS_ADMIN (in the
    # container's user namespace at least), and no_new_privs would break setuid binaries in the
    # guest: libseccomp sets it only if the process could not load the filter otherwise.
    if _has_sys_admin():
        flt.set_attr(pyseccomp.Attr.CTL_NNP, 0)
    for name, mode_arg in MKNOD_MODE_ARG.items():
        for file_type in DEVICE_TYPES:
            flt.add_rule(pyseccomp.NOTIFY, name, pyseccomp.Arg(mode_arg, pyseccomp.MASKED_EQ, S_IFMT, file_type))
    for name in TIME_SYSCALLS:
        flt.add_rule(pyseccomp.NOTIFY, name)
    flt.add_rule(pyseccomp.NOTIFY, "sysinfo")  # answered from the container's cgroup
    for name in ("finit_module", "init_module"):  # allow_module: cmld decides (emulate_module)
        flt.add_rule(pyseccomp.NOTIFY, name)
    return flt


def install_filter(*, allow_system_time: bool) -> int:
    """Load the filter into the calling process (inherited by everything it execs and forks) and
    return the user-notification listener fd (close-on-exec). Raises OSError on failure."""
    flt = build_filter(allow_system_time=allow_system_time)
    # libseccomp asks the kernel for a listener (SECCOMP_FILTER_FLAG_NEW_LISTENER) because the
    # filter has NOTIFY rules, and keeps the fd in its process-wide state.
    flt.load()
    fd: int = pyseccomp._libseccomp.seccomp_notify_fd(flt._filter)
    if fd < 0:
        raise OSError(-fd, f"seccomp_notify_fd: {os.strerror(-fd)}")
    return fd
