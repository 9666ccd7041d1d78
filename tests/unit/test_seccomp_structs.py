"""Seccomp, pure logic: struct layouts, /proc status parsing, device and path helpers, and the
filter's BPF run through a small classic-BPF interpreter (nothing is loaded into the kernel)."""

from __future__ import annotations

import errno
import os
import stat
import struct
import tempfile

import pytest

from cmld.seccomp import filter as sfilter
from cmld.seccomp import notify
from cmld.seccomp.procfs import (
    ProcStatus,
    container_relative,
    decode_dev,
    device_type,
    may_create_in,
    parse_status,
    split_target,
)

from .seccomp_bpf import ALLOW, AUDIT_ARCH_I386, KILL_PROCESS, NOTIFY, Program, bpf, run

pytestmark = pytest.mark.unit


# ---------------------------------------------------------------------------- structs


def test_ioctl_numbers_match_the_kernel_headers() -> None:
    # linux/seccomp.h: _IOWR('!', 0, struct seccomp_notif), _IOWR('!', 1, ...resp), _IOW('!', 2, __u64)
    assert notify.SECCOMP_IOCTL_NOTIF_RECV == 0xC0502100
    assert notify.SECCOMP_IOCTL_NOTIF_SEND == 0xC0182101
    assert notify.SECCOMP_IOCTL_NOTIF_ID_VALID == 0x40082102
    assert (notify.NOTIF_SIZE, notify.RESP_SIZE) == (80, 24)


def test_parse_notif() -> None:
    raw = struct.pack("=QIIiIQ6Q", 0x1122334455667788, 4242, 0, 259, notify.AUDIT_ARCH_X86_64, 0x7FFF0000,
                      2**64 - 100, 0x1000, 0o20666, 259, 0, 0)
    n = notify.parse_notif(raw)
    assert n.id == 0x1122334455667788
    assert n.pid == 4242
    assert n.nr == 259
    assert n.arch == notify.AUDIT_ARCH_X86_64
    assert n.instruction_pointer == 0x7FFF0000
    assert n.args == (2**64 - 100, 0x1000, 0o20666, 259, 0, 0)


def test_pack_responses() -> None:
    assert notify.pack_resp(7, notify.error(errno.EPERM)) == struct.pack("=QqiI", 7, 0, -errno.EPERM, 0)
    assert notify.pack_resp(7, notify.success(3)) == struct.pack("=QqiI", 7, 3, 0, 0)
    assert notify.pack_resp(7, notify.continue_()) == struct.pack("=QqiI", 7, 0, 0, 1)
    assert notify.error(-errno.EACCES).error == -errno.EACCES


def test_read_string_stops_at_nul_and_page_ends() -> None:
    # A file stands in for /proc/<pid>/mem: offsets are addresses.
    page = os.sysconf("SC_PAGE_SIZE")
    with tempfile.TemporaryFile() as f:
        f.write(b"\xff" * 100 + b"/dev/null\0junk")
        f.flush()
        assert notify.read_string(f.fileno(), 100) == b"/dev/null"
        # string running to the end of the "mapping" without NUL -> EFAULT
        f.seek(0)
        f.truncate()
        f.write(b"a" * (page + 10))
        f.flush()
        with pytest.raises(OSError) as e:
            notify.read_string(f.fileno(), page - 5)
        assert e.value.errno == errno.EFAULT
        # a string that ends right at the end of the "mapping" is fine
        f.write(b"\0")
        f.flush()
        assert notify.read_string(f.fileno(), page - 5) == b"a" * 15
        f.seek(0)
        f.write(b"b" * (2 * page))
        f.flush()
        with pytest.raises(OSError) as e:
            notify.read_string(f.fileno(), 1, max_len=4096)
        assert e.value.errno == errno.ENAMETOOLONG
        for bad in (0, 2**64 - 4096):
            with pytest.raises(OSError) as e:
                notify.read_string(f.fileno(), bad)
            assert e.value.errno == errno.EFAULT


# ---------------------------------------------------------------------------- helpers

STATUS = """Name:\tmknod
Umask:\t0027
State:\tR (running)
Uid:\t100000\t100000\t100000\t100005
Gid:\t100000\t100000\t100000\t100007
Groups:\t100010 100011\x20
CapInh:\t0000000000000000
CapEff:\t000001ffffffffff
"""


def test_parse_status() -> None:
    s = parse_status(STATUS)
    assert s == ProcStatus(cap_eff=0x1FFFFFFFFFF, umask=0o027, fsuid=100005, fsgid=100007, groups=(100010, 100011),
                           euid=100000)
    assert s.has_cap(27)
    assert not parse_status(STATUS.replace("000001ffffffffff", "0000000000000001")).has_cap(27)
    with pytest.raises(ValueError):
        parse_status("Name:\tx\n")


def test_device_type_and_dev() -> None:
    assert device_type(stat.S_IFCHR | 0o666) == "c"
    assert device_type(stat.S_IFBLK | 0o600) == "b"
    for other in (stat.S_IFREG, stat.S_IFIFO, stat.S_IFSOCK, 0):
        assert device_type(other | 0o644) is None
    for major, minor in ((1, 3), (8, 17), (259, 0), (4095, 1048575)):
        dev = os.makedev(major, minor) & 0xFFFFFFFF  # what the glibc wrapper passes to the kernel
        assert decode_dev(dev) == (major, minor)


@pytest.mark.parametrize(("path", "expected"), [
    ("/null2", ("/", "null2")), ("null", (".", "null")), ("a/b/c", ("a/b", "c")), ("/a//b", ("/a/", "b")),
    ("../x", ("..", "x")),
])
def test_split_target(path: str, expected: tuple[str, str]) -> None:
    assert split_target(path) == expected


@pytest.mark.parametrize(("path", "err"), [("", errno.ENOENT), ("a/", errno.ENOENT), (".", errno.EEXIST),
                                           ("/x/..", errno.EEXIST)])
def test_split_target_errors(path: str, err: int) -> None:
    with pytest.raises(OSError) as e:
        split_target(path)
    assert e.value.errno == err


def test_container_relative() -> None:
    assert container_relative("/", "/dev") == "dev"
    assert container_relative("/", "/") == "."
    assert container_relative("/tmp/c/root", "/tmp/c/root/sub/x") == "sub/x"
    assert container_relative("/tmp/c/root", "/tmp/c/root") == "."
    assert container_relative("/tmp/c/root", "/tmp/c/rootx") is None
    assert container_relative("/tmp/c/root", "/tmp/c") is None
    assert container_relative("/tmp/c/root", "/tmp/c/root/d (deleted)") is None
    assert container_relative("/", "anon_inode:[x]") is None


def test_may_create_in() -> None:
    caller = ProcStatus(cap_eff=0, umask=0o022, fsuid=1000, fsgid=1000, groups=(50,))
    assert may_create_in(0o755, 1000, 0, caller, False)
    assert not may_create_in(0o555, 1000, 0, caller, False)
    assert may_create_in(0o775, 0, 50, caller, False)
    assert not may_create_in(0o755, 0, 50, caller, False)
    assert may_create_in(0o777, 0, 0, caller, False)
    assert not may_create_in(0o776, 0, 0, caller, False)  # write without search
    assert may_create_in(0o700, 0, 0, caller, True)


# ---------------------------------------------------------------------------- c0's filter as BPF


NR = {"read": 0, "mknod": 133, "mknodat": 259, "clock_settime": 227, "clock_adjtime": 305, "adjtimex": 159,
      "settimeofday": 164, "openat": 257}


@pytest.fixture(scope="module")
def prog() -> Program:
    return bpf(sfilter.FilterKind(light=True))


def test_filter_notifies_device_mknod_only(prog: Program) -> None:
    for ftype, action in ((stat.S_IFCHR, NOTIFY), (stat.S_IFBLK, NOTIFY), (stat.S_IFREG, ALLOW),
                          (stat.S_IFIFO, ALLOW), (stat.S_IFSOCK, ALLOW), (0, ALLOW), (stat.S_IFDIR, ALLOW)):
        assert run(prog, NR["mknod"], (0x1000, ftype | 0o666, 0x103)) == action, oct(ftype)
        assert run(prog, NR["mknodat"], (2**64 - 100, 0x1000, ftype | 0o666, 0x103)) == action, oct(ftype)
    # garbage in the upper half of the mode register does not hide a device
    assert run(prog, NR["mknod"], (0x1000, (0xDEAD << 32) | stat.S_IFCHR | 0o666, 0)) == NOTIFY


def test_filter_time_and_other_syscalls(prog: Program) -> None:
    for name in ("clock_settime", "clock_adjtime", "adjtimex", "settimeofday"):
        assert run(prog, NR[name], (0, 0x1000)) == NOTIFY, name
    for name in ("read", "openat"):
        assert run(prog, NR[name]) == ALLOW, name
    assert run(prog, 2**32 - 1) == ALLOW  # nr -1 (a ptracer skipping the syscall) is the kernel's business


def test_filter_kills_x32_and_foreign_arches(prog: Program) -> None:
    assert run(prog, sfilter.X32_SYSCALL_BIT | 39) == KILL_PROCESS  # x32 getpid
    assert run(prog, sfilter.X32_SYSCALL_BIT | NR["mknod"], (0, stat.S_IFREG, 0)) == KILL_PROCESS
    assert run(prog, 20, arch=AUDIT_ARCH_I386) == KILL_PROCESS  # i386 getpid
