"""Pure logic of the audit subsystem: journal lines under hostile input, the chain and the
verifier, the queue file, the ACK comparison, syslog formatting and framing."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import random
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from cml_common.auditlog.entry import GENESIS, MAX_LINE, EntryError, parse_line
from cml_common.auditlog.verify import verify_lines
from cml_common.messages.audit_pb2 import AuditRecord
from cmld.audit.checkpoints import Checkpointer
from cmld.audit.journal import Journal
from cmld.audit.pull import ack_matches
from cmld.audit.queue import PendingQueue
from cmld.audit.record import from_text, make_record, to_text
from cmld.audit.syslog import format_entry, octet_frame

pytestmark = pytest.mark.unit


def _signer() -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    import datetime

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "unit device")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(1).not_valid_before(now).not_valid_after(now + datetime.timedelta(days=1))
            .sign(key, hashes.SHA256()))
    return key, cert


@pytest.mark.parametrize("line", [
    "", "null", "[]", "{}", "{not json", '"string"', "1e999",
    '{"v":1}', '{"v":2,"seq":1}', '{"v":1,"seq":-1,"time":0,"kind":"record","prev":"' + GENESIS + '"}',
    '{"v":1,"seq":true,"time":0,"kind":"record","prev":"' + GENESIS + '","hash":"' + GENESIS + '"}',
    '{"v":1,"seq":1,"time":0,"kind":"record","prev":"zz","hash":"' + GENESIS + '"}',
    '{"v":1,"seq":1,"time":0,"kind":"record","prev":"' + "g" * 128 + '","hash":"' + GENESIS + '"}',
    '{"v":1,"seq":1,"time":0,"kind":"other","prev":"' + GENESIS + '","hash":"' + GENESIS + '"}',
    '{"v":1,"seq":1,"time":0,"kind":"record","prev":"' + GENESIS + '","hash":"' + GENESIS
    + '","subject":"x","record":"!!!"}',
    '{"v":1,"seq":1,"time":0,"kind":"record","prev":"' + GENESIS + '","hash":"' + GENESIS
    + '","subject":"x","record":"","extra":1}',
    '{"v":1,"seq":1,"time":0,"kind":"checkpoint","prev":"' + GENESIS + '","hash":"' + GENESIS + '","covers":0}',
    "\udcff", "x" * (MAX_LINE + 1),
])
def test_hostile_lines_are_entry_errors(line: str) -> None:
    with pytest.raises(EntryError):
        parse_line(line)


def test_random_bytes_never_escape_the_verifier() -> None:
    rng = random.Random(5)
    lines = [bytes(rng.randrange(256) for _ in range(rng.randrange(200))) + b"\n" for _ in range(300)]
    r = verify_lines(lines, trusted=None)
    assert not r.ok and r.records == 0


def _journal(tmp_path: Path, n: int) -> tuple[Journal, x509.Certificate]:
    key, cert = _signer()
    j = Journal(tmp_path)
    j.open()

    async def sign(data: bytes) -> tuple[bytes, bytes]:
        from cryptography.hazmat.primitives import serialization

        return key.sign(data, ec.ECDSA(hashes.SHA256())), cert.public_bytes(serialization.Encoding.PEM)

    cp = Checkpointer(j, sign, 4, 60, lambda why: None)
    for i in range(n):
        j.append_record("s", make_record("SSA", "GENERIC", f"e{i}", None, {}).SerializeToString(), now=i)
        cp.record_added()
        if cp.pending >= 4:
            assert asyncio.run(cp.checkpoint())
    assert asyncio.run(cp.checkpoint())
    return j, cert


def test_chain_verifies_and_a_bit_flip_anywhere_is_found(tmp_path: Path) -> None:
    j, cert = _journal(tmp_path, 10)
    data = j.path.read_bytes()
    r = verify_lines(data.splitlines(keepends=True), trusted=cert, require_sealed=True)
    assert r.ok, r.problems
    assert r.records == 10 and r.checkpoints == 3 and r.unsealed == 0
    rng = random.Random(1)
    for _ in range(40):
        pos = rng.randrange(len(data))
        if data[pos:pos + 1] == b"\n":
            continue
        flipped = data[:pos] + bytes([data[pos] ^ 0x01]) + data[pos + 1:]
        assert not verify_lines(flipped.splitlines(keepends=True), trusted=cert).ok, pos


def test_torn_tail_is_cut_and_reported_and_the_chain_goes_on(tmp_path: Path) -> None:
    j, cert = _journal(tmp_path, 3)
    with j.path.open("ab") as f:
        f.write(b'{"v":1,"seq":')
    again = Journal(tmp_path)
    again.open()
    assert again.torn == b'{"v":1,"seq":' and again.last_seq == j.last_seq
    again.append_record("s", b"", now=5)
    r = verify_lines(again.path.read_bytes().splitlines(keepends=True), trusted=cert)
    assert r.ok and r.unsealed == 1
    assert len(again.read_after(0, 100)) == again.last_seq
    assert again.read_after(0, 100, subject="nobody") == []
    assert again.read_after(1 << 63, 10) == []


def test_checkpoint_is_skipped_when_records_arrived_while_signing(tmp_path: Path) -> None:
    j, _ = _journal(tmp_path, 1)
    covers, h, when = j.checkpoint_statement_args()
    j.append_record("s", b"", now=1)
    assert j.append_checkpoint(covers, h, when, b"sig", "cert") is None


def test_queue_order_capacity_and_torn_record(tmp_path: Path) -> None:
    q = PendingQueue(tmp_path / "q.log", 200)
    assert q.first() is None and q.remaining() == 200
    assert q.append("a: 1\n") and q.append("b: 2\n")
    assert not q.append("x" * 300)  # does not fit: nothing written
    assert q.path.read_text() == "a: 1\n-----\nb: 2\n-----\n"
    with q.path.open("a") as f:
        f.write("torn")  # a record cut short by a crash
    assert q.append("c: 3\n")
    assert q.path.read_text().endswith("torn-----\nc: 3\n-----\n")
    assert q.first() == "a: 1\n"
    q.pop_first()
    assert q.first() == "b: 2\n"
    for _ in range(5):
        q.pop_first()
    assert not q.path.exists() and q.first() is None


def test_record_text_round_trip_and_corrupt_text() -> None:
    r = make_record("FUA", "TOKEN_MGMT", "unlock-wrong-pin", "uuid", {"k": 'v"\n-----\n]'})
    assert from_text(to_text(r)) == r
    assert "\n-----\n" not in to_text(r)  # a value cannot end a record early
    bad = from_text("type: \"unterminated\ntimestamp: x")
    assert bad.type == "FSA.CMLD.GENERIC.corrupt-record" and bad.meta[0].key == "raw_text"
    long = make_record("SSA", "GENERIC", "x", None, {"v": "y" * 10000})
    assert len(long.meta[0].value) < 4200
    with pytest.raises(ValueError):
        make_record("XXX", "GENERIC", "x", None, {})


def test_ack_comparison() -> None:
    h = "ab" * 64
    assert ack_matches(h, h.upper())
    assert not ack_matches("", "0" * 128) and not ack_matches(h, h[:-1]) and not ack_matches(h, h + "0")


def test_syslog_message_escaping_and_framing(tmp_path: Path) -> None:
    j = Journal(tmp_path)
    j.open()
    rec = make_record("FSA", "GENERIC", "evil", "sub", {'k e]y="': 'v"a\\l]ue'}, now=0)
    e = j.append_record("sub ject", rec.SerializeToString(deterministic=True), now=0)
    msg = format_entry(e, "host name")
    assert msg.startswith(b"<108>1 1970-01-01T00:00:00Z host_name cmld - FSA.CMLD.GENERIC.evil [cml@32473 seq=\"1\"")
    assert b'[meta@32473 k_e_y__="v\\"a\\\\l\\]ue"]' in msg
    framed = octet_frame(msg)
    length, _, rest = framed.partition(b" ")
    assert int(length) == len(rest) == len(msg)
    d = json.loads(e.line())
    assert base64.b64decode(d["record"]) == rec.SerializeToString(deterministic=True)
    assert os.path.getsize(j.path) == j.size
    assert AuditRecord.FromString(e.record).type == "FSA.CMLD.GENERIC.evil"


def test_record_text_is_what_the_generic_printer_writes() -> None:
    from google.protobuf import text_format

    rng = random.Random(9)
    alphabet = "ab \t\n\r\"'\\\x00\x01\x1f\x7f é€😀-]="
    for _ in range(300):
        meta = {"".join(rng.choice(alphabet) for _ in range(rng.randrange(6))):
                "".join(rng.choice(alphabet) for _ in range(rng.randrange(30))) for _ in range(rng.randrange(4))}
        subject = rng.choice([None, "", "x\ny"])
        r = make_record("SSA", "GENERIC", "e", subject, meta, now=rng.randrange(1 << 40))
        assert to_text(r) == text_format.MessageToString(r, as_utf8=True)
        assert from_text(to_text(r)) == r


def test_denial_summary_records_the_first_at_once_and_counts_the_rest() -> None:
    from cmld.audit import events
    from cmld.audit.denials import DenialSummary

    got: list[tuple[str, str, dict[str, str]]] = []

    class Sink:
        def log_event(self, category: str, evclass: str, event: str, subject: str | None,
                      meta: dict[str, str]) -> None:
            got.append((event, subject or "", meta))

    async def scenario() -> None:
        s = DenialSummary("u", "app", window=0.05)
        for nr in (133, 133, 133, 259, 999):
            s(nr)
        assert [g[0] for g in got] == ["seccomp-denied"] * 3
        await asyncio.sleep(0.1)
        s.close()

    events.install(Sink())
    try:
        asyncio.run(scenario())
    finally:
        events.install(None)
    assert got[0][2]["syscall"] == "mknod" and got[2][2]["syscall"] == "999"
    (summary,) = [g for g in got if g[0] == "seccomp-denied-summary"]
    assert summary[2]["mknod"] == "2" and "mknodat" not in summary[2]


def test_reads_are_bounded_in_count_and_bytes(tmp_path: Path) -> None:
    j = Journal(tmp_path)
    j.open()
    big = make_record("SSA", "GENERIC", "e", None, {"v": "x" * 3000}).SerializeToString()
    for i in range(50):
        j.append_record("a" if i % 2 else "b", big)
    assert len(j.read_after(0, 10)) == 10
    assert len(j.read_after(0, 1000, max_bytes=20000)) == 5  # stops once past the byte budget
    assert {parse_line(x).subject for x in j.read_after(0, 1000, subject="a")} == {"a"}
    assert [parse_line(x).seq for x in j.read_after(45, 1000)] == [46, 47, 48, 49, 50]
