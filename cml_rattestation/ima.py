"""The IMA binary measurement list (securityfs `binary_runtime_measurements`): parsed strictly,
each template hash checked, and replayed into the SHA-256 bank of the IMA PCR.

Templates: `ima-ng`, `ima-sig`, `ima-modsig` (digest with algorithm prefix, file name, optional
signature) and the legacy `ima`. The kernel extends every bank with the template data hashed by
that bank's algorithm; a violation (all-zero template hash) extends all ones.
"""

from __future__ import annotations

import hashlib
import struct
from dataclasses import dataclass

MAX_ENTRIES = 1_000_000


class ImaError(ValueError):
    pass


@dataclass(frozen=True)
class ImaEntry:
    pcr: int
    template_hash: bytes
    template: str
    data: bytes
    file_digest: bytes = b""
    file_alg: str = ""
    filename: str = ""
    signature: bytes = b""


def _fields(data: bytes, what: str) -> list[bytes]:
    out = []
    off = 0
    while off < len(data):
        if off + 4 > len(data):
            raise ImaError(f"{what}: truncated field length")
        n = struct.unpack_from("<I", data, off)[0]
        off += 4
        if off + n > len(data):
            raise ImaError(f"{what}: field of {n} bytes overruns the template data")
        out.append(data[off:off + n])
        off += n
    return out


def parse(raw: bytes) -> list[ImaEntry]:
    entries: list[ImaEntry] = []
    off = 0
    while off < len(raw):
        what = f"IMA entry {len(entries)} at byte {off}"
        if off + 28 > len(raw):
            raise ImaError(f"{what}: truncated header")
        pcr = struct.unpack_from("<I", raw, off)[0]
        thash = raw[off + 4:off + 24]
        nlen = struct.unpack_from("<I", raw, off + 24)[0]
        off += 28
        if nlen > 255 or off + nlen + 4 > len(raw):
            raise ImaError(f"{what}: bad template name length {nlen}")
        name = raw[off:off + nlen].decode("ascii", errors="replace")
        off += nlen
        dlen = struct.unpack_from("<I", raw, off)[0]
        off += 4
        if off + dlen > len(raw):
            raise ImaError(f"{what}: template data of {dlen} bytes overruns the list")
        data = raw[off:off + dlen]
        off += dlen
        entry = ImaEntry(pcr, thash, name, data)
        if name in ("ima-ng", "ima-sig", "ima-modsig"):
            f = _fields(data, what)
            if len(f) < 2:
                raise ImaError(f"{what}: {name} needs a digest and a file name")
            alg, _, digest = f[0].partition(b":\0")
            entry = ImaEntry(pcr, thash, name, data, digest, alg.decode(errors="replace"),
                             f[1].rstrip(b"\0").decode(errors="replace"), f[2] if len(f) > 2 else b"")
        entries.append(entry)
        if len(entries) > MAX_ENTRIES:
            raise ImaError("IMA list has more than a million entries")
    return entries


def check_template_hashes(entries: list[ImaEntry]) -> list[str]:
    """Entries whose SHA-1 template hash does not match their template data."""
    bad = []
    for i, e in enumerate(entries):
        if e.template_hash == bytes(20):
            continue  # violation entry
        if hashlib.sha1(e.data).digest() != e.template_hash:  # noqa: S324 (the IMA format's own hash)
            bad.append(f"entry {i} ({e.filename or e.template}): template hash does not match its data")
    return bad


def replay(entries: list[ImaEntry], pcr: int) -> bytes:
    value = bytes(32)
    for e in entries:
        if e.pcr != pcr:
            continue
        ext = b"\xff" * 32 if e.template_hash == bytes(20) else hashlib.sha256(e.data).digest()
        value = hashlib.sha256(value + ext).digest()
    return value
