"""PIN and key material handling: constant-time comparison and best-effort wiping.

Python strings are immutable and may be copied by the interpreter, so wiping is best effort: we
move every secret into a `bytearray` as early as possible, pass that around, and zero it when the
operation is over. The protobuf request object still holds its own copy until it is collected.
"""

from __future__ import annotations

import contextlib
import hmac
from collections.abc import Iterator


def wipe(buf: bytearray | None) -> None:
    """Overwrite a secret in place (the only kind of wiping Python allows)."""
    if buf is not None:
        for i in range(len(buf)):
            buf[i] = 0


@contextlib.contextmanager
def secret(value: str | bytes | None) -> Iterator[bytearray]:
    """A mutable copy of a PIN or key that is zeroed when the block ends."""
    buf = bytearray(value.encode() if isinstance(value, str) else (value or b""))
    try:
        yield buf
    finally:
        wipe(buf)


def equal(a: bytes | bytearray, b: bytes | bytearray) -> bool:
    """Constant-time comparison, so response timing reveals nothing about a PIN or secret."""
    return hmac.compare_digest(bytes(a), bytes(b))
