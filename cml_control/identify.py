"""Whether a container argument is a UUID, decided as the original's `uuid_new()` decides it.

The original resolves `<c>` like this: if `uuid_new(<c>)` accepts the word as a UUID, only a
container with that UUID matches (no name fallback); otherwise it logs `Retrying with name` and
takes the first container with that name. `uuid_new` accepts
- a 36-character string that `sscanf("%x-%hx-%hx-%hx-%lx")` reads completely and that prints back
  as the same text, ignoring case (so: the canonical form, in any case), and
- a string of at least 32 characters whose five chunks of 8, 4, 4, 4 and 12 characters each read
  as `%x` (32 hex digits, the canonical form without dashes, and some odder strings).
A 36-character string that scans but does not print back the same makes it log a WARN.
"""

from __future__ import annotations

_SPACE = " \t\n\v\f\r"
_HEX = "0123456789abcdefABCDEF"
_ULONG_MAX = (1 << 64) - 1


def _scan_hex(s: str, pos: int, bits: int) -> tuple[int, int] | None:
    """One `%x` conversion at `pos` (glibc: spaces, a sign, an optional 0x, hex digits; strtoul
    saturation; stored into an unsigned type of `bits`). None when nothing matches."""
    n = len(s)
    while pos < n and s[pos] in _SPACE:
        pos += 1
    negative = False
    if pos < n and s[pos] in "+-":
        negative = s[pos] == "-"
        pos += 1
    if s.startswith(("0x", "0X"), pos):
        pos += 2
        if pos >= n or s[pos] not in _HEX:
            return 0, pos
    start = pos
    while pos < n and s[pos] in _HEX:
        pos += 1
    if pos == start:
        return None
    value = min(int(s[start:pos], 16), _ULONG_MAX)
    if negative:
        value = -value & _ULONG_MAX
    return value & ((1 << bits) - 1), pos


def _format(parts: list[int]) -> str:
    text = f"{parts[0]:08x}-{parts[1]:04x}-{parts[2]:04x}-{parts[3]:04x}-{parts[4]:012x}"
    return text[:36]  # snprintf into 37 bytes


def _scan_dashed(s: str) -> list[int] | None:
    parts: list[int] = []
    pos = 0
    for i, bits in enumerate((32, 16, 16, 16, 64)):
        if i:
            if pos >= len(s) or s[pos] != "-":
                return None
            pos += 1
        got = _scan_hex(s, pos, bits)
        if got is None:
            return None
        value, pos = got
        parts.append(value)
    return parts


def _scan_chunks(s: str) -> list[int] | None:
    parts: list[int] = []
    offset = 0
    for width, bits in ((8, 32), (4, 16), (4, 16), (4, 16), (12, 64)):
        got = _scan_hex(s[offset:offset + width], 0, bits)
        if got is None:
            return None
        parts.append(got[0])
        offset += width
    return parts


def original_uuid(ident: str) -> tuple[str | None, str | None]:
    """(the UUID the original reads in `ident`, or None; a WARN line it logs, or None)."""
    if len(ident) == 36:
        parts = _scan_dashed(ident)
        if parts is not None:
            text = _format(parts)
            if text.lower() != ident.lower():
                return None, (f"{ident} and {text} are not equal! Final check for string equality failed, "
                              "not generating an UUID")
            return text, None
    if len(ident) >= 32:
        parts = _scan_chunks(ident)
        if parts is not None:
            return _format(parts), None
    return None, None
