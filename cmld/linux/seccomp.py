"""seccomp(2) queries cmld needs beyond libseccomp: the kernel's user-notification struct sizes."""

from __future__ import annotations

import ctypes
import os
from functools import cache

from cmld.linux.libc import syscall

SYS_SECCOMP = 317  # x86-64
SECCOMP_GET_NOTIF_SIZES = 3


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
