"""The kernel's seccomp user-notification API on a listener fd (x86-64 layouts), plus access to the
caller's memory through /proc/<pid>/mem.

    struct seccomp_data      { int nr; __u32 arch; __u64 instruction_pointer; __u64 args[6]; }   64 B
    struct seccomp_notif     { __u64 id; __u32 pid; __u32 flags; struct seccomp_data data; }      80 B
    struct seccomp_notif_resp{ __u64 id; __s64 val; __s32 error; __u32 flags; }                   24 B

A notification id is only meaningful while the caller is still blocked in that syscall: every
lookup in /proc/<pid> is bracketed by `id_valid` checks so that a dead caller whose PID was reused
cannot make cmld act on (or read from) another process.
"""

from __future__ import annotations

import errno
import fcntl
import os
import struct
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from cmld.errors import CmldError
from cmld.linux.seccomp import notif_sizes

AUDIT_ARCH_X86_64 = 0xC000003E
SECCOMP_USER_NOTIF_FLAG_CONTINUE = 1

_SECCOMP_IOC_MAGIC = ord("!")


def _ioc(direction: int, nr: int, size: int) -> int:
    return (direction << 30) | (size << 16) | (_SECCOMP_IOC_MAGIC << 8) | nr


_IOC_WRITE, _IOC_READ = 1, 2
NOTIF_FORMAT = "=QII" + "iIQ6Q"
RESP_FORMAT = "=QqiI"
NOTIF_SIZE = struct.calcsize(NOTIF_FORMAT)  # 80
RESP_SIZE = struct.calcsize(RESP_FORMAT)  # 24
SECCOMP_IOCTL_NOTIF_RECV = _ioc(_IOC_READ | _IOC_WRITE, 0, NOTIF_SIZE)
SECCOMP_IOCTL_NOTIF_SEND = _ioc(_IOC_READ | _IOC_WRITE, 1, RESP_SIZE)
SECCOMP_IOCTL_NOTIF_ID_VALID = _ioc(_IOC_WRITE, 2, 8)
# struct seccomp_notif_addfd { __u64 id; __u32 flags; __u32 srcfd; __u32 newfd; __u32 newfd_flags; }  24 B
ADDFD_FORMAT = "=QIIII"
SECCOMP_IOCTL_NOTIF_ADDFD = _ioc(_IOC_WRITE, 3, struct.calcsize(ADDFD_FORMAT))
SECCOMP_ADDFD_FLAG_SEND = 1 << 1  # install and answer the syscall with the new fd, atomically (5.14)

PATH_MAX = 4096
_PAGE = os.sysconf("SC_PAGE_SIZE")


@dataclass(frozen=True)
class Notification:
    id: int
    pid: int  # thread id of the caller, as seen from cmld's PID namespace
    flags: int
    nr: int
    arch: int
    instruction_pointer: int
    args: tuple[int, int, int, int, int, int]


@dataclass(frozen=True)
class Response:
    """What the blocked syscall returns: `error` (a negative errno) if non-zero, else `val`; with
    the CONTINUE flag the kernel runs the syscall itself as if there were no filter."""

    val: int = 0
    error: int = 0
    flags: int = 0


def error(err: int) -> Response:
    return Response(error=-abs(err))


def success(val: int = 0) -> Response:
    return Response(val=val)


def continue_() -> Response:
    return Response(flags=SECCOMP_USER_NOTIF_FLAG_CONTINUE)


def parse_notif(buf: bytes) -> Notification:
    nid, pid, flags, nr, arch, ip, *args = struct.unpack_from(NOTIF_FORMAT, buf)
    return Notification(nid, pid, flags, nr, arch, ip, tuple(args))


def pack_resp(notif_id: int, resp: Response) -> bytes:
    return struct.pack(RESP_FORMAT, notif_id, resp.val, resp.error, resp.flags)


def recv(fd: int) -> Notification:
    """Receive one notification. Blocks if none is pending: call it only when the fd polls
    readable. ENOENT means the caller went away between poll and receive."""
    # The kernel requires a zeroed buffer; a newer kernel's larger struct only adds fields at the end.
    buf = bytearray(max(notif_sizes()[0], NOTIF_SIZE))
    fcntl.ioctl(fd, SECCOMP_IOCTL_NOTIF_RECV, buf, True)
    return parse_notif(bytes(buf))


def send(fd: int, notif_id: int, resp: Response) -> None:
    raw = pack_resp(notif_id, resp)
    raw += bytes(max(notif_sizes()[1] - len(raw), 0))
    fcntl.ioctl(fd, SECCOMP_IOCTL_NOTIF_SEND, raw)


def add_fd_and_answer(fd: int, notif_id: int, src_fd: int, *, cloexec: bool) -> int:
    """Install a copy of our `src_fd` in the caller, at its lowest free number, and answer the
    notified syscall with that number, in one step (SECCOMP_ADDFD_FLAG_SEND): the caller either
    gets the fd as the syscall's result or never gets it. Returns the number in the caller.

    Raises OSError: ENOENT when the notification is no longer pending (nothing installed, no
    answer due); any other errno (EMFILE: the caller's RLIMIT_NOFILE) leaves the notification
    pending, to be answered with that error."""
    raw = bytearray(struct.pack(ADDFD_FORMAT, notif_id, SECCOMP_ADDFD_FLAG_SEND, src_fd, 0,
                                os.O_CLOEXEC if cloexec else 0))
    return int(fcntl.ioctl(fd, SECCOMP_IOCTL_NOTIF_ADDFD, raw, True))  # mutable buffer: the ioctl's result


def id_valid(fd: int, notif_id: int) -> bool:
    """Is the caller still blocked in the notified syscall?"""
    try:
        fcntl.ioctl(fd, SECCOMP_IOCTL_NOTIF_ID_VALID, struct.pack("=Q", notif_id))
    except OSError as e:
        if e.errno == errno.ENOENT:
            return False
        raise
    return True


# ---------------------------------------------------------------------------- caller's memory


class CallerGone(CmldError):
    """The notified syscall is no longer pending (the caller died or was interrupted): whatever was
    read about it may belong to another process, and no response is due."""


def check_valid(fd: int, notif_id: int) -> None:
    if not id_valid(fd, notif_id):
        raise CallerGone(f"notification {notif_id:#x} is no longer pending")


def read_mem(mem_fd: int, addr: int, size: int) -> bytes:
    """`size` bytes at `addr` in the process whose /proc/<pid>/mem is `mem_fd`. EFAULT for a bad
    address, as the kernel itself would answer."""
    if addr <= 0 or addr + size > 1 << 63:
        raise OSError(errno.EFAULT, "bad address in caller")
    out = b""
    while len(out) < size:
        try:
            chunk = os.pread(mem_fd, size - len(out), addr + len(out))
        except OSError as e:
            if e.errno in (errno.EIO, errno.EFAULT):
                raise OSError(errno.EFAULT, "bad address in caller") from None
            raise
        if not chunk:
            raise OSError(errno.EFAULT, "bad address in caller")
        out += chunk
    return out


@contextmanager
def _efault_on_bad_address() -> Iterator[None]:
    """/proc/<pid>/mem answers EIO for an unmapped address; the caller's syscall would get EFAULT."""
    try:
        yield
    except OSError as e:
        if e.errno in (errno.EIO, errno.EFAULT):
            raise OSError(errno.EFAULT, "bad address in caller") from None
        raise


def read_string(mem_fd: int, addr: int, max_len: int = PATH_MAX) -> bytes:
    """A NUL-terminated string at `addr`, without the NUL. Reads page by page, so a string that
    ends just before an unmapped page is still read. ENAMETOOLONG if there is no NUL within
    `max_len` bytes (the NUL counts, as for PATH_MAX)."""
    if addr <= 0 or addr + max_len > 1 << 63:
        raise OSError(errno.EFAULT, "bad address in caller")
    out = bytearray()
    pos = addr
    while len(out) < max_len:
        want = min(_PAGE - pos % _PAGE, max_len - len(out))
        with _efault_on_bad_address():
            chunk = os.pread(mem_fd, want, pos)
        nul = chunk.find(b"\0")
        if nul >= 0:
            out += chunk[:nul]
            return bytes(out)
        if len(chunk) < want:
            raise OSError(errno.EFAULT, "bad address in caller")
        out += chunk
        pos += want
    raise OSError(errno.ENAMETOOLONG, "string from caller too long")


def write_mem(mem_fd: int, addr: int, data: bytes) -> None:
    if addr <= 0 or addr + len(data) > 1 << 63:
        raise OSError(errno.EFAULT, "bad address in caller")
    with _efault_on_bad_address():
        written = os.pwrite(mem_fd, data, addr)
    if written != len(data):
        raise OSError(errno.EFAULT, "bad address in caller")


def read_caller_string(listener_fd: int, notif_id: int, mem_fd: int, addr: int, max_len: int = PATH_MAX) -> bytes:
    """`read_string`, then the ID_VALID re-check: only if the caller is still blocked in the
    notified syscall did the bytes come from its memory (and not from a process that reused its
    PID). Raises CallerGone otherwise."""
    value = read_string(mem_fd, addr, max_len)
    check_valid(listener_fd, notif_id)
    return value


def read_caller_mem(listener_fd: int, notif_id: int, mem_fd: int, addr: int, size: int) -> bytes:
    """`read_mem` with the same ID_VALID re-check as `read_caller_string`."""
    value = read_mem(mem_fd, addr, size)
    check_valid(listener_fd, notif_id)
    return value
