"""Files a command sends (configs, signatures, certificates): read whole, refused from their
size before reading when they cannot fit in one message."""

from __future__ import annotations

import os

from .failures import ERROR, Fatal

MAX_INPUT_FILE = 64 * 1024 * 1024  # nothing larger fits in one message


def read_input(path: str, what: str, access_msg: str, read_msg: str) -> tuple[bytes, int]:
    """(contents, size as stat says): the original stats, then reads, with a FATAL for each."""
    try:
        size = os.stat(path).st_size
    except (OSError, ValueError) as e:
        raise Fatal(access_msg, detail=f"cannot read {what} {path}: {getattr(e, 'strerror', None) or e}") from None
    too_large = Fatal("error sending protobuf message\n", detail=f"{what} {path} is too large for one message",
                      preface=[(ERROR, "Packed message exceeds PROTOBUF_MAX_MESSAGE_SIZE")])
    if size >= MAX_INPUT_FILE:
        raise too_large  # not even read
    try:
        with open(path, "rb") as f:
            data = f.read(MAX_INPUT_FILE)  # a bound all the same: /dev/zero has size 0 and no end
    except (OSError, ValueError) as e:
        raise Fatal(read_msg, detail=f"cannot read {what} {path}: {getattr(e, 'strerror', None) or e}") from None
    if len(data) >= MAX_INPUT_FILE:
        raise too_large
    return data, size
