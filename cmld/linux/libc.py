"""The one place cmld loads libc and makes raw system calls.

Every ctypes call of cmld goes through this package, so the kernel surface the daemon and its
launcher use can be read (and audited) in one place. Wrappers raise OSError with the errno and
the call's name, so callers report what failed.
"""

from __future__ import annotations

import ctypes
import os

LIBC = ctypes.CDLL("libc.so.6", use_errno=True)  # glibc; find_library would spawn ldconfig
_syscall = LIBC.syscall
_syscall.restype = ctypes.c_long


def check(ret: int, what: str) -> int:
    """`ret` if it is not negative, else OSError(errno) naming `what`."""
    if ret < 0:
        err = ctypes.get_errno()
        raise OSError(err, f"{what}: {os.strerror(err)}")
    return ret


def syscall(nr: int, *args: object) -> int:
    """A raw system call (for calls glibc 2.36 has no wrapper for); returns -1 with errno set."""
    return int(_syscall(nr, *args))


def path_arg(path: str | bytes | None) -> bytes | None:
    if path is None:
        return None
    return path if isinstance(path, bytes) else os.fsencode(path)
