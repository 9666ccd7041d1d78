"""Files named in requests (CRYPTO_HASH_FILE, CRYPTO_VERIFY_FILE): opened only when they are
regular files, so a name cannot make scd read forever (/dev/zero, /dev/urandom), block on a FIFO,
or fail with an internal error (a NUL byte in the name). Found by fuzzing scd's socket.

Errors are OSError with a strerror, as for a file that does not exist, so every caller already
answers them with the command's error code."""

from __future__ import annotations

import errno
import os
import stat
from pathlib import Path
from typing import BinaryIO


def open_regular(name: str | Path) -> BinaryIO:
    text = str(name)
    if "\0" in text:
        raise OSError(errno.EINVAL, "the file name contains a NUL byte", text)
    fd = os.open(text, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC | os.O_NOCTTY)
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise OSError(errno.EINVAL, "not a regular file", text)
        os.set_blocking(fd, True)
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise


def read_regular(name: str | Path, limit: int) -> bytes:
    """The whole file, or OSError(EFBIG) when it is larger than `limit` bytes."""
    with open_regular(name) as f:
        data = f.read(limit + 1)
    if len(data) > limit:
        raise OSError(errno.EFBIG, f"larger than {limit} bytes", str(name))
    return data
