"""seccomp(2) without libseccomp: loading a filter cmld compiled (raw classic BPF) with a
user-notification listener, and the kernel's notification struct sizes.

The launcher and the exec helper only load; the filter is compiled once in cmld, so neither
needs libseccomp on the start path of a container.
"""

from __future__ import annotations

import ctypes
import os
from functools import cache

from cmld.linux.libc import syscall

SYS_SECCOMP = 317  # x86-64
SECCOMP_SET_MODE_FILTER = 1
SECCOMP_GET_NOTIF_SIZES = 3
SECCOMP_FILTER_FLAG_NEW_LISTENER = 1 << 3
BPF_INSN_SIZE = 8  # struct sock_filter: u16 code, u8 jt, u8 jf, u32 k


class _SockFprog(ctypes.Structure):
    _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.c_void_p)]


def load_filter(bpf: bytes) -> int:
    """Install the classic-BPF program `bpf` on the calling thread (inherited by what it forks and
    execs) and return the listener fd for its NOTIFY rules (close-on-exec).

    No no_new_privs: setuid programs in the guest must keep working. The kernel then requires
    CAP_SYS_ADMIN in the caller's user namespace, which the launcher and the exec helper hold
    at this point; without it this fails with EACCES rather than quietly setting no_new_privs."""
    if not bpf or len(bpf) % BPF_INSN_SIZE:
        raise ValueError(f"a seccomp filter of {len(bpf)} bytes is not a whole number of BPF instructions")
    buf = ctypes.create_string_buffer(bpf, len(bpf))
    prog = _SockFprog(len(bpf) // BPF_INSN_SIZE, ctypes.addressof(buf))
    fd = syscall(SYS_SECCOMP, ctypes.c_uint(SECCOMP_SET_MODE_FILTER), ctypes.c_uint(SECCOMP_FILTER_FLAG_NEW_LISTENER),
                 ctypes.byref(prog))
    if fd < 0:
        err = ctypes.get_errno()
        raise OSError(err, f"seccomp(SET_MODE_FILTER): {os.strerror(err)}")
    os.set_inheritable(fd, False)
    return fd


class _NotifSizes(ctypes.Structure):
    _fields_ = [("seccomp_notif", ctypes.c_uint16), ("seccomp_notif_resp", ctypes.c_uint16),
                ("seccomp_data", ctypes.c_uint16)]


@cache
def notif_sizes() -> tuple[int, int, int]:
    """The kernel's sizes of seccomp_notif, seccomp_notif_resp and seccomp_data."""
    sizes = _NotifSizes()
    if syscall(SYS_SECCOMP, ctypes.c_uint(SECCOMP_GET_NOTIF_SIZES), ctypes.c_uint(0), ctypes.byref(sizes)) < 0:
        err = ctypes.get_errno()
        raise OSError(err, f"seccomp(SECCOMP_GET_NOTIF_SIZES): {os.strerror(err)}")
    return sizes.seccomp_notif, sizes.seccomp_notif_resp, sizes.seccomp_data
