"""One line of the audit journal and its place in the hash chain.

A line is a JSON object; its `hash` is SHA-512 over the previous entry's hash (raw bytes) and the
canonical JSON of every other field (sorted keys, no spaces), so changing, removing or moving any
entry breaks every later link. The first entry's `prev` is 128 zeros (GENESIS).

Two kinds: `record` (an AuditRecord, protobuf-serialised deterministically and base64-encoded,
plus the subject it is stored for) and `checkpoint` (the device key's signature over the hash of
the entry before it, see seal.py).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
from dataclasses import dataclass, field
from typing import Any

GENESIS = "0" * 128
VERSION = 1
MAX_LINE = 256 * 1024  # a longer line is damage, not an entry
RECORD = "record"
CHECKPOINT = "checkpoint"


class EntryError(ValueError):
    """A journal line that is not a well-formed entry."""


@dataclass
class Entry:
    seq: int
    time: int
    kind: str
    prev: str
    subject: str = ""
    record: bytes = b""  # serialised AuditRecord (kind record)
    covers: int = 0  # kind checkpoint: the sequence number it seals
    covers_hash: str = ""
    sig: bytes = b""
    cert: str = ""  # PEM of the signer
    hash: str = field(default="")

    def body(self) -> dict[str, Any]:
        d: dict[str, Any] = {"v": VERSION, "seq": self.seq, "time": self.time, "kind": self.kind, "prev": self.prev}
        if self.kind == RECORD:
            d["subject"] = self.subject
            d["record"] = base64.b64encode(self.record).decode()
        else:
            d.update(covers=self.covers, covers_hash=self.covers_hash,
                     sig=base64.b64encode(self.sig).decode(), cert=self.cert)
        return d

    def compute_hash(self) -> str:
        canon = json.dumps(self.body(), sort_keys=True, separators=(",", ":")).encode()
        return hashlib.sha512(bytes.fromhex(self.prev) + canon).hexdigest()

    def seal(self) -> Entry:
        self.hash = self.compute_hash()
        return self

    def line(self) -> str:
        d = self.body()
        d["hash"] = self.hash
        return json.dumps(d, sort_keys=True, separators=(",", ":"))


def _int(d: dict[str, Any], key: str) -> int:
    v = d.get(key)
    if not isinstance(v, int) or isinstance(v, bool) or v < 0:
        raise EntryError(f"field {key!r} is not a non-negative integer")
    return v


def _str(d: dict[str, Any], key: str, *, hexlen: int | None = None) -> str:
    v = d.get(key)
    if not isinstance(v, str):
        raise EntryError(f"field {key!r} is not a string")
    if hexlen is not None:
        if len(v) != hexlen:
            raise EntryError(f"field {key!r} is not {hexlen} hex digits")
        try:
            bytes.fromhex(v)
        except ValueError:
            raise EntryError(f"field {key!r} is not hex") from None
    return v


def _b64(d: dict[str, Any], key: str) -> bytes:
    try:
        return base64.b64decode(_str(d, key), validate=True)
    except binascii.Error:
        raise EntryError(f"field {key!r} is not base64") from None


def parse_line(line: str | bytes) -> Entry:
    """The entry on one line, or EntryError saying what is wrong with it (never anything else)."""
    if len(line) > MAX_LINE:
        raise EntryError(f"line longer than {MAX_LINE} bytes")
    try:
        d = json.loads(line)
    except (ValueError, UnicodeDecodeError) as err:
        raise EntryError(f"not JSON ({err})") from None
    if not isinstance(d, dict):
        raise EntryError("not a JSON object")
    if d.get("v") != VERSION:
        raise EntryError(f"unknown version {d.get('v')!r}")
    kind = _str(d, "kind")
    e = Entry(seq=_int(d, "seq"), time=_int(d, "time"), kind=kind, prev=_str(d, "prev", hexlen=128),
              hash=_str(d, "hash", hexlen=128))
    if kind == RECORD:
        e.subject = _str(d, "subject")
        e.record = _b64(d, "record")
    elif kind == CHECKPOINT:
        e.covers = _int(d, "covers")
        e.covers_hash = _str(d, "covers_hash", hexlen=128)
        e.sig = _b64(d, "sig")
        e.cert = _str(d, "cert")
    else:
        raise EntryError(f"unknown kind {kind!r}")
    extra = set(d) - set(e.body()) - {"hash"}
    if extra:
        raise EntryError(f"unexpected fields {sorted(extra)}")
    return e
