"""The verifier: is this journal the unbroken, signed history the device wrote?

It walks every line and reports, by line and sequence number, each problem it finds instead of
stopping at the first: a line that is not an entry (edited or truncated mid-line), a hash that
does not match the entry (edited), a `prev` that does not match the entry before it (an entry
deleted, inserted or moved), a sequence number out of order (reordered), a checkpoint whose
signature fails or whose key is not the trusted device key (re-sealed). A journal that ends before
the last checkpoint recorded in the head file, or before an anchor the caller got elsewhere (the
collector's copy, an earlier `audit verify`), was cut at the end (journald FSS, CVE-2023-31438).

Entries after the last checkpoint are reported as unsealed: cmld signs them on its next
checkpoint; `require_sealed` makes them a problem (a journal of a cmld that has stopped cleanly
ends with a checkpoint).
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from cryptography import x509

from .entry import CHECKPOINT, GENESIS, Entry, EntryError, parse_line
from .seal import load_cert, public_der, signature_valid, statement


@dataclass(frozen=True)
class Anchor:
    """A (seq, hash) known from outside the journal that must be in it."""

    seq: int
    hash: str


@dataclass
class Report:
    problems: list[str] = field(default_factory=list)
    records: int = 0
    checkpoints: int = 0
    last_seq: int = 0
    sealed_upto: int = 0
    unsealed: int = 0

    @property
    def ok(self) -> bool:
        return not self.problems

    def summary(self) -> str:
        state = "OK" if self.ok else f"FAILED ({len(self.problems)} problem(s))"
        return (f"{state}: {self.records} record(s), {self.checkpoints} signed checkpoint(s), "
                f"sealed up to seq {self.sealed_upto}, {self.unsealed} unsealed at the end")


def read_anchor(text: str) -> Anchor:
    """An anchor from a head file or a checkpoint line: its own seq and hash. ValueError if not."""
    try:
        e = parse_line(text.strip())
    except EntryError as err:
        raise ValueError(f"not a journal entry: {err}") from None
    return Anchor(e.seq, e.hash)


class _Walker:
    def __init__(self, trusted: x509.Certificate | None, report: Report) -> None:
        self.trusted_key = public_der(trusted) if trusted is not None else None
        self.r = report
        self.prev_hash = GENESIS
        self.prev_seq = 0
        self.seen: dict[int, str] = {}
        self.first = True

    def problem(self, where: str, what: str) -> None:
        self.r.problems.append(f"{where}: {what}")

    def entry(self, lineno: int, e: Entry) -> None:
        where = f"line {lineno} (seq {e.seq})"
        if e.compute_hash() != e.hash:
            self.problem(where, "hash does not match the entry: edited")
        if self.first and (e.seq != 1 or e.prev != GENESIS):
            self.problem(where, "the journal does not start at seq 1: entries removed at the start")
        elif not self.first:
            if e.seq != self.prev_seq + 1:
                kind = "reordered or duplicated" if e.seq <= self.prev_seq else "entries missing before it"
                self.problem(where, f"sequence number follows {self.prev_seq}: {kind}")
            if e.prev != self.prev_hash:
                self.problem(where, "does not chain to the entry before it: an entry was deleted, inserted or moved")
        self.first = False
        if e.kind == CHECKPOINT:
            self.checkpoint(where, e)
        else:
            self.r.records += 1
            self.r.unsealed += 1
        self.seen[e.seq] = e.hash
        self.prev_hash, self.prev_seq = e.hash, e.seq
        self.r.last_seq = e.seq

    def checkpoint(self, where: str, e: Entry) -> None:
        if e.covers != e.seq - 1 or e.covers_hash != e.prev:
            self.problem(where, "checkpoint does not seal the entry right before it")
            return
        try:
            cert = load_cert(e.cert)
        except ValueError:
            self.problem(where, "checkpoint certificate unreadable")
            return
        if not signature_valid(cert, statement(e.covers, e.covers_hash, e.time), e.sig):
            self.problem(where, "checkpoint signature does not verify: records before it were changed or it was forged")
            return
        if self.trusted_key is not None and public_der(cert) != self.trusted_key:
            self.problem(where, "checkpoint signed by a key that is not the trusted device key: re-sealed")
            return
        self.r.checkpoints += 1
        self.r.sealed_upto = e.seq
        self.r.unsealed = 0


def verify_lines(lines: Iterable[bytes], *, trusted: x509.Certificate | None,
                 anchors: Iterable[Anchor] = (), require_sealed: bool = False) -> Report:
    """`trusted` None checks the chain and that signatures match their own certificates, but not
    whose key signed (reported as a problem, so it can never pass silently)."""
    r = Report()
    w = _Walker(trusted, r)
    if trusted is None:
        r.problems.append("no trusted device certificate given: signatures cannot be attributed to the device")
    n = 0
    for n, raw in enumerate(lines, 1):
        if not raw.endswith(b"\n"):
            w.problem(f"line {n}", "incomplete last line: the journal was truncated")
            continue
        try:
            e = parse_line(raw[:-1])
        except EntryError as err:
            w.problem(f"line {n}", f"not a journal entry ({err}): edited or corrupted")
            continue
        w.entry(n, e)
    if n == 0:
        r.problems.append("the journal is empty")
    for a in anchors:
        if a.seq > r.last_seq:
            r.problems.append(f"the journal ends at seq {r.last_seq}, before the known entry {a.seq}: cut at the end")
        elif w.seen.get(a.seq) != a.hash:
            r.problems.append(f"entry {a.seq} is not the one known from outside the journal: history rewritten")
    if require_sealed and r.unsealed:
        r.problems.append(f"{r.unsealed} record(s) after the last signed checkpoint")
    return r


def verify_dir(directory: Path, *, trusted: x509.Certificate | None, anchors: Iterable[Anchor] = (),
               require_sealed: bool = False) -> Report:
    """The journal and head file cmld keeps in its audit directory."""
    journal = directory / "journal.log"
    found = list(anchors)
    head = directory / "head.json"
    try:
        found.append(read_anchor(head.read_text()))
    except FileNotFoundError:
        pass
    except (OSError, ValueError, UnicodeDecodeError) as e:
        return Report(problems=[f"{head}: unreadable head file: {e}"])
    try:
        with journal.open("rb") as f:
            return verify_lines(f, trusted=trusted, anchors=found, require_sealed=require_sealed)
    except FileNotFoundError:
        return Report(problems=[f"{journal}: no journal"])


def report_json(r: Report) -> str:
    return json.dumps({"ok": r.ok, "problems": r.problems, "records": r.records, "checkpoints": r.checkpoints,
                       "last_seq": r.last_seq, "sealed_upto": r.sealed_upto, "unsealed": r.unsealed})
