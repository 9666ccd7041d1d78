"""Clock calls Python lacks: clock_adjtime on CLOCK_REALTIME with a raw struct timex."""

from __future__ import annotations

import ctypes

from cmld.linux.libc import LIBC

CLOCK_REALTIME = 0
TIMEX_SIZE = 208  # struct timex / __kernel_timex on x86-64


def clock_adjtime_realtime(timex: bytes) -> tuple[int, bytes]:
    """(return value or -errno, the struct as the kernel left it)."""
    buf = ctypes.create_string_buffer(timex, TIMEX_SIZE)
    ret = int(LIBC.clock_adjtime(ctypes.c_int(CLOCK_REALTIME), buf))
    if ret < 0:
        return -(ctypes.get_errno() or 22), buf.raw
    return ret, buf.raw
