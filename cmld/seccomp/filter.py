"""Compiling a container's seccomp filter (c_seccomp), once per kind, in cmld.

cmld compiles the filter with libseccomp and hands the raw BPF to the launcher and to every exec
helper, which load it with one system call (`cmld.linux.seccomp.load_filter`) right before
execve: no libseccomp, no compilation on the start path of a container, and the filter a
container gets cannot depend on anything inside it. Two kinds:

* the **light** filter of c0, the original's: default ALLOW; mknod/mknodat of a character or
  block device and the clock-setting calls notified to cmld.
* the **strict** filter of every other container (`policy.py`): default EPERM (Docker's), an
  allow list at least as strict as Docker's default profile, argument rules,
  the groups a kept capability opens, and the same notifications plus reboot (unless the
  container keeps CAP_SYS_BOOT); without a user namespace (`inotify_broker`) inotify_init and
  inotify_init1 too: cmld answers them with an instance charged to the container's own account.

Both: a foreign architecture, and on x86-64 every x32 system call (nr with bit 0x40000000, which
libseccomp sends to the bad-arch action), kills the process: the same kernel entry points must
not be reachable under numbers the rules never match.
"""

from __future__ import annotations

import contextlib
import errno
import tempfile
from dataclasses import dataclass
from functools import cache

import pyseccomp  # type: ignore[import-untyped]

from cmld.seccomp import policy as P

X32_SYSCALL_BIT = 0x40000000
S_IFMT = 0o170000
DEVICE_TYPES = (0o020000, 0o060000)  # S_IFCHR, S_IFBLK
OTHER_TYPES = (0, 0o100000, 0o010000, 0o140000)  # regular (0 means regular), FIFO, socket
LOW32 = 0xFFFFFFFF
# Kept for callers that ask which calls are notified.
MKNOD_MODE_ARG = P.MKNOD_MODE_ARG
TIME_SYSCALLS = P.TIME_SYSCALLS


@dataclass(frozen=True)
class FilterKind:
    """Which filter: c0's light one, or the strict one shaped by the capabilities kept and, for a
    container without a user namespace, with its inotify instances made by its broker."""

    light: bool = False
    kept: frozenset[str] = frozenset()
    inotify_broker: bool = False
    uevents: bool = True  # NETLINK_KOBJECT_UEVENT sockets (see modules/seccomp.py uevents_allowed)


def _new(default: int) -> pyseccomp.SyscallFilter:
    flt = pyseccomp.SyscallFilter(default)
    flt.set_attr(pyseccomp.Attr.ACT_BADARCH, pyseccomp.KILL_PROCESS)
    flt.set_attr(pyseccomp.Attr.CTL_NNP, 0)  # the loader never sets no_new_privs (load_filter)
    with contextlib.suppress(OSError, ValueError):  # libseccomp < 2.5: a linear list, slower only
        flt.set_attr(pyseccomp.Attr.CTL_OPTIMIZE, 2)  # a binary tree over the syscall numbers
    return flt


def _notify_devices(flt: pyseccomp.SyscallFilter, *, allow_others: bool) -> None:
    for name, mode_arg in P.MKNOD_MODE_ARG.items():
        for file_type in DEVICE_TYPES:
            flt.add_rule(pyseccomp.NOTIFY, name, pyseccomp.Arg(mode_arg, pyseccomp.MASKED_EQ, S_IFMT, file_type))
        if allow_others:
            for file_type in OTHER_TYPES:
                flt.add_rule(pyseccomp.ALLOW, name, pyseccomp.Arg(mode_arg, pyseccomp.MASKED_EQ, S_IFMT, file_type))
    for name in P.TIME_SYSCALLS:
        flt.add_rule(pyseccomp.NOTIFY, name)


def _allow_unless_low32(flt: pyseccomp.SyscallFilter, name: str, arg: int, value: int) -> None:
    """ALLOW `name` unless the low 32 bits of `arg` equal `value` (an `int` argument: the kernel
    ignores the upper half of the register, so a plain != would let value | 1 << 32 through).
    x != value exactly when some bit differs: one rule per bit; x == value gets the default."""
    for bit in range(32):
        flt.add_rule(pyseccomp.ALLOW, name, pyseccomp.Arg(arg, pyseccomp.MASKED_EQ, 1 << bit, ~value & (1 << bit)))


def _allow_unless_in_low32(flt: pyseccomp.SyscallFilter, name: str, arg: int, refused: tuple[int, ...],
                           *also: pyseccomp.Arg) -> None:
    """ALLOW `name` (with the conditions `also`) unless the low 32 bits of `arg` are one of
    `refused`. A bit in which all refused values agree, set the other way, proves the value is
    none of them (one rule per such bit); the values that agree with them in all those bits
    differ only in the remaining bits and are allowed one by one (few: the refused values are
    small and close)."""
    common = [b for b in range(32) if len({(v >> b) & 1 for v in refused}) == 1]
    for bit in common:
        flt.add_rule(pyseccomp.ALLOW, name, pyseccomp.Arg(arg, pyseccomp.MASKED_EQ, 1 << bit,
                                                          ~refused[0] & (1 << bit)), *also)
    free = [b for b in range(32) if b not in common]
    if len(free) > 8:
        raise ValueError(f"refused values {refused} differ in {len(free)} bits")
    base = refused[0] & sum(1 << b for b in common)
    for combo in range(1 << len(free)):
        value = base | sum(((combo >> i) & 1) << b for i, b in enumerate(free))
        if value not in refused:
            flt.add_rule(pyseccomp.ALLOW, name, pyseccomp.Arg(arg, pyseccomp.MASKED_EQ, LOW32, value), *also)


def _allow_socket_but(flt: pyseccomp.SyscallFilter, domains: tuple[int, ...], netlink: int, protocol: int) -> None:
    """socket() of any domain but `domains`, and of `netlink` with any protocol but `protocol`:
    libseccomp lets an ALLOW rule win over a narrower refusal, so the allowed set is spelled out."""
    _allow_unless_in_low32(flt, "socket", 0, domains)
    _allow_unless_in_low32(flt, "socket", 2, (protocol,), pyseccomp.Arg(0, pyseccomp.MASKED_EQ, LOW32, netlink))


def _syscall_nr(name: str, fallback: int | None = None) -> int | None:
    nr = int(pyseccomp.resolve_syscall(pyseccomp.Arch.NATIVE, name))
    if nr < 0:
        return fallback
    return nr


# Answered by cmld's supervisor: sysinfo from the container's cgroup (emulate_sysinfo), the module
# calls against `allow_module` (emulate_module; never passed to the kernel).
EMULATED = ("sysinfo",)
MODULE_CALLS = ("finit_module", "init_module")


def build_light() -> pyseccomp.SyscallFilter:
    flt = _new(pyseccomp.ALLOW)
    _notify_devices(flt, allow_others=False)
    for name in (*EMULATED, *MODULE_CALLS):
        flt.add_rule(pyseccomp.NOTIFY, name)
    return flt


def build_strict(kept: frozenset[str], inotify_broker: bool = False, uevents: bool = True) -> pyseccomp.SyscallFilter:
    flt = _new(pyseccomp.ERRNO(errno.EPERM))
    allowed: set[str] = set(P.ALLOWED)
    newer = dict(P.ALLOWED_NEWER)
    for cap, names in P.BY_CAPABILITY.items():
        if cap in kept:
            allowed.update(names)
            newer.update(P.ALLOWED_NEWER_BY_CAPABILITY.get(cap, {}))
    notified = {*P.MKNOD_MODE_ARG, *P.TIME_SYSCALLS, *EMULATED}
    if "SYS_MODULE" in kept:  # allow_module with enforced signatures: cmld decides each load
        notified.update(MODULE_CALLS)
    if "SYS_BOOT" not in kept:
        notified.add(P.REBOOT)
        allowed.discard(P.REBOOT)
    if inotify_broker:
        notified.update(P.INOTIFY_INIT)
    for name in sorted(allowed - notified):
        nr = _syscall_nr(name)
        if nr is not None:
            flt.add_rule(pyseccomp.ALLOW, nr)
    for name, number in sorted(newer.items()):
        flt.add_rule(pyseccomp.ALLOW, _syscall_nr(name, number))
    if "clone3" not in allowed:  # its flags are in memory, out of the filter's reach: glibc falls back to clone
        flt.add_rule(pyseccomp.ERRNO(errno.ENOSYS), "clone3")
    _notify_devices(flt, allow_others=True)
    for name in sorted(notified & {P.REBOOT, *EMULATED, *MODULE_CALLS, *P.INOTIFY_INIT}):
        flt.add_rule(pyseccomp.NOTIFY, name)
    _argument_rules(flt, kept, uevents)
    return flt


def _argument_rules(flt: pyseccomp.SyscallFilter, kept: frozenset[str], uevents: bool = True) -> None:
    """Calls allowed with some arguments only; any other argument gets the default EPERM."""
    for persona in P.PERSONALITIES:
        flt.add_rule(pyseccomp.ALLOW, "personality", pyseccomp.Arg(0, pyseccomp.MASKED_EQ, LOW32, persona))
    if uevents:
        _allow_unless_low32(flt, "socket", 0, P.AF_VSOCK)
    else:
        _allow_socket_but(flt, (P.AF_VSOCK, P.AF_NETLINK), P.AF_NETLINK, P.NETLINK_KOBJECT_UEVENT)
    _allow_unless_low32(flt, "ioctl", 1, P.TIOCSTI)
    if "SYS_ADMIN" in kept:
        flt.add_rule(pyseccomp.ALLOW, "clone")
    else:
        flt.add_rule(pyseccomp.ALLOW, "clone", pyseccomp.Arg(0, pyseccomp.MASKED_EQ, P.CLONE_NAMESPACE_FLAGS, 0))
    flt.add_rule(pyseccomp.ALLOW, "userfaultfd",
                 pyseccomp.Arg(0, pyseccomp.MASKED_EQ, P.UFFD_USER_MODE_ONLY, P.UFFD_USER_MODE_ONLY))
    policy_mask = LOW32 & ~P.SCHED_RESET_ON_FORK
    for sched in P.SCHED_POLICIES:
        flt.add_rule(pyseccomp.ALLOW, "sched_setscheduler", pyseccomp.Arg(1, pyseccomp.MASKED_EQ, policy_mask, sched))


def build_filter(kind: FilterKind) -> pyseccomp.SyscallFilter:
    """The filter, not loaded (tests export it as BPF or pseudo code)."""
    return build_light() if kind.light else build_strict(kind.kept, kind.inotify_broker, kind.uevents)


@cache
def compiled(kind: FilterKind) -> bytes:
    """The filter as raw classic BPF for `load_filter`, compiled once per kind for cmld's life."""
    with tempfile.TemporaryFile() as f:
        build_filter(kind).export_bpf(f)
        f.seek(0)
        bpf = f.read()
    if not bpf:
        raise OSError(errno.EINVAL, "libseccomp exported an empty seccomp filter")
    return bpf


def install_filter(kind: FilterKind) -> int:
    """Compile and load `kind` into the calling process; returns the listener fd (tests, tools:
    containers get the compiled BPF from cmld instead)."""
    from cmld.linux.seccomp import load_filter

    return load_filter(compiled(kind))


def pseudo_code(kind: FilterKind) -> str:
    """libseccomp's readable form of the filter (diagnostics, the README)."""
    with tempfile.TemporaryFile() as f:
        build_filter(kind).export_pfc(f)
        f.seek(0)
        return f.read().decode()
