"""The strict seccomp filter of ordinary containers, as BPF run through the interpreter: the
allow list, the calls only a kept capability opens, the argument rules (with garbage in the
upper half of 32-bit arguments), the notifications, and a check against the calls Docker's
documentation lists as blocked by its default profile."""

from __future__ import annotations

import errno
import stat

import pyseccomp  # type: ignore[import-untyped]
import pytest

from cmld.modules.capabilities import kept_caps
from cmld.seccomp import filter as sfilter
from cmld.seccomp import policy

from .seccomp_bpf import ALLOW, AUDIT_ARCH_I386, KILL_PROCESS, NOTIFY, Program, bpf, errno_action, run

pytestmark = pytest.mark.unit

EPERM, ENOSYS = errno_action(errno.EPERM), errno_action(errno.ENOSYS)
NO_USERNS = kept_caps(userns=False, c0=False, setup=False, allow_modules=False, allow_time=False)
USERNS = kept_caps(userns=True, c0=False, setup=False, allow_modules=False, allow_time=False)
SETUP_NO_USERNS = kept_caps(userns=False, c0=False, setup=True, allow_modules=False, allow_time=False)
MODULES = kept_caps(userns=False, c0=False, setup=False, allow_modules=True, allow_time=False)
HI = 0xDEAD << 32  # garbage in the upper half of a register holding an `int`


def nr(name: str) -> int:
    return int(pyseccomp.resolve_syscall(pyseccomp.Arch.NATIVE, name))


@pytest.fixture(scope="module")
def plain() -> Program:
    return bpf(sfilter.FilterKind(kept=NO_USERNS))


@pytest.fixture(scope="module")
def userns() -> Program:
    return bpf(sfilter.FilterKind(kept=USERNS))


def test_allow_list_and_default(plain: Program, userns: Program) -> None:
    for name in policy.ALLOWED:
        if nr(name) >= 0:
            want = NOTIFY if name in sfilter.EMULATED else ALLOW  # sysinfo: answered from the cgroup
            assert run(plain, nr(name)) == want, name
            assert run(userns, nr(name)) == want, name
    for number in policy.ALLOWED_NEWER.values():
        assert run(plain, number) == ALLOW, number
    assert run(plain, 470) == EPERM  # newer than this table: refused as Docker refuses the unknown
    assert run(plain, 2**32 - 1) == EPERM


def test_denied_calls(plain: Program, userns: Program) -> None:
    opened_by_userns = {n for cap in ("SYS_ADMIN", "SYS_CHROOT") for n in policy.BY_CAPABILITY[cap]}
    for name in policy.DENIED:
        if nr(name) < 0:
            continue
        assert run(plain, nr(name)) in (EPERM, ENOSYS), name
        if name not in opened_by_userns:
            assert run(userns, nr(name)) == EPERM, name
    for name in ("io_uring_setup", "io_uring_enter", "io_uring_register", "keyctl", "add_key", "request_key",
                 "bpf", "perf_event_open", "open_by_handle_at", "kexec_load", "kexec_file_load", "init_module",
                 "iopl", "ioperm", "swapon", "acct", "quotactl", "syslog", "sched_setattr"):
        assert run(userns, nr(name)) == EPERM, name
    assert run(plain, nr("name_to_handle_at")) == ALLOW  # names what the caller can already see


def test_capability_groups(plain: Program, userns: Program) -> None:
    for name in ("mount", "umount2", "unshare", "setns", "pivot_root", "sethostname", "fsopen", "open_tree", "chroot"):
        assert run(plain, nr(name)) == EPERM, name
        assert run(userns, nr(name)) == ALLOW, name
    assert run(plain, nr("clone3")) == ENOSYS  # glibc falls back to clone, whose flags the filter sees
    assert run(userns, nr("clone3")) == ALLOW
    modules = bpf(sfilter.FilterKind(kept=MODULES))
    for name in ("init_module", "finit_module", "delete_module"):
        assert run(plain, nr(name)) == EPERM, name
        # loading goes through cmld's allow_module check (emulate_module); unloading stays the kernel's
        assert run(modules, nr(name)) == (NOTIFY if name in sfilter.MODULE_CALLS else ALLOW), name


def test_clone_flags(plain: Program, userns: Program) -> None:
    fork = 0x01200011  # CLONE_CHILD_SETTID | CLONE_CHILD_CLEARTID | SIGCHLD
    thread = 0x3D0F00
    for flags in (fork, thread):
        assert run(plain, nr("clone"), (flags,)) == ALLOW
    for ns in (0x10000000, 0x20000, 0x20000000, 0x40000000, 0x04000000, 0x08000000, 0x02000000):
        assert run(plain, nr("clone"), (fork | ns,)) == EPERM, hex(ns)
        assert run(userns, nr("clone"), (fork | ns,)) == ALLOW, hex(ns)


def test_argument_rules(plain: Program) -> None:
    personality = nr("personality")
    for persona in (0, 8, 0x20000, 0x20008, 0xFFFFFFFF):
        assert run(plain, personality, (persona,)) == ALLOW, hex(persona)
    assert run(plain, personality, (HI,)) == ALLOW  # the kernel reads 0: PER_LINUX
    for persona in (0x0100000, 0x0040000, 0x0400000, HI | 0x0100000):  # MMAP_PAGE_ZERO, ADDR_NO_RANDOMIZE,
        assert run(plain, personality, (persona,)) == EPERM, hex(persona)  # READ_IMPLIES_EXEC
    socket = nr("socket")
    for family in (1, 2, 10, 16, 17, 29, 38):
        assert run(plain, socket, (family, 1, 0)) == ALLOW, family
        assert run(plain, socket, (HI | family, 1, 0)) == ALLOW, family
    assert run(plain, socket, (policy.AF_VSOCK, 1, 0)) == EPERM
    assert run(plain, socket, (HI | policy.AF_VSOCK, 1, 0)) == EPERM
    ioctl = nr("ioctl")
    for request in (0x5401, 0x540E, 0x5413, 0x5411, 0x5414):  # TCGETS, TIOCSCTTY, TIOCGWINSZ...
        assert run(plain, ioctl, (0, request)) == ALLOW, hex(request)
    assert run(plain, ioctl, (0, policy.TIOCSTI)) == EPERM
    assert run(plain, ioctl, (0, HI | policy.TIOCSTI)) == EPERM
    uffd = nr("userfaultfd")
    assert run(plain, uffd, (1,)) == ALLOW
    assert run(plain, uffd, (0o2000000 | 0o4000 | 1,)) == ALLOW  # O_CLOEXEC | O_NONBLOCK | USER_MODE_ONLY
    assert run(plain, uffd, (0o2000000,)) == EPERM
    sched = nr("sched_setscheduler")
    for pol in (0, 3, 5, 0x40000000):
        assert run(plain, sched, (0, pol, 0)) == ALLOW, pol
    for pol in (1, 2, 6, 0x40000001, HI | 1):
        assert run(plain, sched, (0, pol, 0)) == EPERM, pol


def test_notifications(plain: Program) -> None:
    for name in ("mknod", "mknodat"):
        mode_arg = policy.MKNOD_MODE_ARG[name]
        for ftype, action in ((stat.S_IFCHR, NOTIFY), (stat.S_IFBLK, NOTIFY), (stat.S_IFREG, ALLOW), (0, ALLOW),
                              (stat.S_IFIFO, ALLOW), (stat.S_IFSOCK, ALLOW)):
            args = [0, 0, 0]
            args[mode_arg] = HI | ftype | 0o600
            assert run(plain, nr(name), tuple(args)) == action, (name, oct(ftype))
    for name in policy.TIME_SYSCALLS:
        assert run(plain, nr(name)) == NOTIFY, name
    assert run(plain, nr("reboot")) == NOTIFY
    setup = bpf(sfilter.FilterKind(kept=SETUP_NO_USERNS))  # the original's set keeps CAP_SYS_BOOT
    assert run(setup, nr("reboot")) == ALLOW
    assert run(setup, nr("kexec_load")) == EPERM


def test_inotify_init_notified_only_without_a_user_namespace(plain: Program, userns: Program) -> None:
    """A container without a user namespace gets its inotify instances from its broker (every
    flag value goes to cmld, which checks it as the kernel would); everything else is unchanged."""
    brokered = bpf(sfilter.FilterKind(kept=NO_USERNS, inotify_broker=True))
    for name in policy.INOTIFY_INIT:
        for flags in (0, 0o2000000, 0o4000, HI | 0o2004000, 0xFFFFFFFF):
            assert run(brokered, nr(name), (flags,)) == NOTIFY, (name, flags)
            assert run(plain, nr(name), (flags,)) == ALLOW, (name, flags)
            assert run(userns, nr(name), (flags,)) == ALLOW, (name, flags)
    for name in policy.ALLOWED:
        if nr(name) >= 0 and name not in policy.INOTIFY_INIT and name not in sfilter.EMULATED:
            assert run(brokered, nr(name)) == ALLOW, name
    for name in ("inotify_add_watch", "inotify_rm_watch"):
        assert run(brokered, nr(name)) == ALLOW, name
    assert run(brokered, nr("fanotify_init")) == EPERM  # no fanotify group at all
    assert run(brokered, nr("reboot")) == NOTIFY
    assert run(brokered, nr("mknod"), (0, stat.S_IFCHR | 0o600)) == NOTIFY
    light = bpf(sfilter.FilterKind(light=True, inotify_broker=True))  # c0: host root's by design
    assert run(light, nr("inotify_init1")) == ALLOW


def test_uevent_sockets_refused_only_where_uevents_are_off(plain: Program) -> None:
    """uevents off (no user namespace, no usb_configs): socket(AF_NETLINK, *, KOBJECT_UEVENT)
    refused, high bits of the int arguments ignored as the kernel does; every other family and
    netlink protocol exactly as with uevents on (vsock refused in both)."""
    off = bpf(sfilter.FilterKind(kept=NO_USERNS, inotify_broker=True, uevents=False))
    socket = nr("socket")
    uevent = policy.NETLINK_KOBJECT_UEVENT
    for typ in (2, 3, 0o2000002):  # DGRAM, RAW, DGRAM | CLOEXEC
        assert run(off, socket, (policy.AF_NETLINK, typ, uevent)) == EPERM
        assert run(off, socket, (HI | policy.AF_NETLINK, typ, HI | uevent)) == EPERM
        assert run(plain, socket, (policy.AF_NETLINK, typ, uevent)) == ALLOW
    for family in range(0, 64):
        for proto in (0, 9, uevent, 16, 31):
            want = run(plain, socket, (family, 2, proto))
            if (family, proto) == (policy.AF_NETLINK, uevent):
                continue
            assert run(off, socket, (family, 2, proto)) == want, (family, proto)
    assert run(off, socket, (policy.AF_VSOCK, 1, 0)) == EPERM


def test_other_abis_are_killed(plain: Program) -> None:
    assert run(plain, sfilter.X32_SYSCALL_BIT | 39) == KILL_PROCESS
    assert run(plain, sfilter.X32_SYSCALL_BIT | nr("keyctl")) == KILL_PROCESS
    assert run(plain, 20, arch=AUDIT_ARCH_I386) == KILL_PROCESS


# Docker's documentation, "Seccomp security profiles for Docker", table "Significant syscalls
# blocked by the default profile" (x86-64 names). Where we allow one, the reason is the same as
# the profile's own exception (argument rules, kernel >= 4.8 for ptrace) or cmld decides it.
DOCKER_DOCUMENTED_BLOCKED = (
    "acct", "add_key", "bpf", "clock_adjtime", "clock_settime", "clone", "create_module", "delete_module",
    "finit_module", "get_kernel_syms", "get_mempolicy", "init_module", "ioperm", "iopl", "kcmp", "kexec_file_load",
    "kexec_load", "keyctl", "lookup_dcookie", "mbind", "mount", "move_pages", "nfsservctl", "open_by_handle_at",
    "perf_event_open", "personality", "pivot_root", "process_vm_readv", "process_vm_writev", "ptrace",
    "query_module", "quotactl", "reboot", "request_key", "set_mempolicy", "setns", "settimeofday", "swapon",
    "swapoff", "sysfs", "umount2", "unshare", "uselib", "userfaultfd", "ustat",
)
EXCEPTIONS = {
    "clone": "allowed without namespace flags, as the profile",
    "personality": "allowed with the profile's personas only",
    "ptrace": "the profile allows it from kernel 4.8 on",
    "process_vm_readv": "the profile allows it from kernel 4.8 on",
    "process_vm_writev": "the profile allows it from kernel 4.8 on",
    "userfaultfd": "UFFD_USER_MODE_ONLY only",
}


def test_at_least_as_strict_as_dockers_documented_blocks(plain: Program) -> None:
    for name in DOCKER_DOCUMENTED_BLOCKED:
        number = nr(name)
        if number < 0:
            continue
        verdict = run(plain, number)
        if name in EXCEPTIONS:
            continue
        assert verdict in (EPERM, ENOSYS, NOTIFY), name  # NOTIFY: cmld decides (mknod, time, reboot)


def test_light_filter_of_c0_allows_by_default() -> None:
    light = bpf(sfilter.FilterKind(light=True))
    for name in ("keyctl", "mount", "unshare", "bpf"):
        assert run(light, nr(name)) == ALLOW, name
    assert run(light, nr("clock_settime")) == NOTIFY
