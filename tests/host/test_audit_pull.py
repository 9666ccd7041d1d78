"""The original's record pull over a container's service socket, driven by a reader written to
the original's protocol (ACK 128 zeros, then SHA-512 of each exact body), and the capacity
policy: threshold warning, AUDIT_NOTIFY with the remaining bytes, a full queue that loses
nothing (the journal keeps every record and the reader is told which ones it missed)."""

from __future__ import annotations

import hashlib
import json
import socket
import struct
from collections.abc import Iterator
from pathlib import Path

import pytest

from cml_common.paths import C0_UUID

from ..conftest import HOSTED_DEVICE_CONF, Daemon, DaemonFactory, cli, is_root
from .auditlib import C2S, S2C, ZERO_ACK, ServiceReader, init_pid, journal_entries, of_type
from .containers import create, install_guestos, uuid_of, wait_state

pytestmark = [pytest.mark.host, pytest.mark.skipif(not is_root(), reason="needs root")]
CAPACITY = 3000
CONF = HOSTED_DEVICE_CONF + "audit_size: 1\naudit_warn_percent: 50\n"


@pytest.fixture
def running(cmld_factory: DaemonFactory, guestos_src: Path) -> Iterator[tuple[Daemon, str, ServiceReader]]:
    """A container whose init is a plain sleep: the test's reader is its service (first client)
    and reports the boot itself."""
    base = cmld_factory.tmp / "cmld-base"
    install_guestos(guestos_src, base, name="quiet", init_path="/bin/sh", init_param=["-c", "sleep 1000"])
    d = cmld_factory.start("--audit-capacity", str(CAPACITY), base=base, device_conf=CONF)
    create(d, cmld_factory.tmp, "q", "quiet")
    uuid = uuid_of(d, "q")
    assert cli(d.socket, "start", "q").rc == 0
    wait_state(d, "q", "BOOTING")
    reader = ServiceReader(init_pid(cmld_factory.tmp / "cmld-run", uuid))
    reader.send(S2C(code=S2C.BOOT_COMPLETED))
    wait_state(d, "q", "RUNNING")
    try:
        yield d, uuid, reader
    finally:
        reader.close()
        cli(d.socket, "stop", "q")


def queue_file(d: Daemon, uuid: str) -> Path:
    return d.base / "audit" / f"{uuid}.log"


@pytest.mark.req("TSF Audit", "CR 6.1")
def test_pull_drains_the_queue_in_order(running: tuple[Daemon, str, ServiceReader]) -> None:
    d, uuid, reader = running
    text = queue_file(d, uuid).read_text()
    assert text.endswith("-----\n") and 'type: "SUA.CMLD.CONTAINER_MGMT.container-start"' in text
    queued = text.count("-----\n")
    assert reader.wait_notify() > 0  # AUDIT_NOTIFY with the remaining bytes
    got = reader.pull_all()
    assert len(got) >= queued
    assert not queue_file(d, uuid).exists()  # drained: the file goes with the last record
    journal = [e["type"] for e in journal_entries(d) if e.get("stored_for") == uuid]
    assert [r.type for r in got] == journal[: len(got)]  # the same records, in journal order
    assert all(r.subject_id == uuid for r in got if ".CONTAINER_MGMT.container-" in r.type)


def test_wrong_ack_resends_and_bad_frames_are_survived(running: tuple[Daemon, str, ServiceReader]) -> None:
    d, uuid, reader = running
    reader.pull_all()
    assert cli(d.socket, "state", "q").rc == 0  # a command about q: one record in q's queue
    reader.send(S2C(code=S2C.AUDIT_ACK, audit_ack=ZERO_ACK))
    first_body, first = reader.recv()
    assert first.code == C2S.AUDIT_RECORD
    for bad in ("f" * 128, "x", "0" * 200, ""):
        reader.send(S2C(code=S2C.AUDIT_ACK, audit_ack=bad))
        body, _ = reader.recv()
        assert body == first_body  # not acknowledged: the same record again
    # garbage bodies on the same connection: logged, the connection keeps working
    reader.sock.sendall(struct.pack(">I", 5) + b"\xff\xff\xff\xff\xff")
    reader.sock.sendall(struct.pack(">I", 0))

    reader.send(S2C(code=S2C.AUDIT_ACK, audit_ack=hashlib.sha512(first_body).hexdigest().upper()))
    _, nxt = reader.recv()
    assert nxt.code in (C2S.AUDIT_RECORD, C2S.AUDIT_COMPLETE)
    # an oversized frame: cmld drops that connection only; a new reader is served
    pid = init_pid(d.base.parent / "cmld-run", uuid)
    big = socket.socket(socket.AF_UNIX)
    big.connect(f"/proc/{pid}/root/run/socket/cml-service")
    big.sendall(struct.pack(">I", 64 << 20))
    big.close()
    again = ServiceReader(pid)
    try:
        again.pull_all()
    finally:
        again.close()
    assert d.alive()


@pytest.mark.req("CR 2.9", "CR 2.9 (1)")
def test_capacity_threshold_full_and_nothing_lost(running: tuple[Daemon, str, ServiceReader]) -> None:
    d, uuid, reader = running
    reader.pull_all()
    reader.notifies.clear()
    before = journal_entries(d)[-1]["seq"]
    n = 30
    for _ in range(n):
        assert cli(d.socket, "state", "q").rc == 0
    assert queue_file(d, uuid).stat().st_size <= CAPACITY
    entries = journal_entries(d)
    mine = [e for e in entries if e.get("stored_for") == uuid and e["seq"] > before]
    assert len(of_type(mine, ".get-container-status")) >= n  # every record in the journal
    (warn,) = of_type(mine, "FSA.CMLD.GENERIC.audit-storage-threshold")
    assert warn["meta"]["threshold_percent"] == "50" and int(warn["meta"]["used"]) * 2 >= CAPACITY
    (full,) = of_type(mine, "FSA.CMLD.GENERIC.audit-storage-full")
    first_missed = int(full["meta"]["first_seq"])
    reader.wait_notify()
    assert min(reader.notifies) < CAPACITY // 2  # the remaining bytes went down
    # the reader catches up; the next record brings the account of what was not queued
    got = reader.pull_all()
    assert cli(d.socket, "state", "q").rc == 0
    got += reader.pull_all()
    gaps = [r for r in got if r.type == "FSA.CMLD.GENERIC.audit-records-not-queued"
            and int({m.key: m.value for m in r.meta}["first_seq"]) > before]
    assert len(gaps) == 1, [(r.type, {m.key: m.value for m in r.meta}) for r in got]
    gap = gaps[0]
    meta = {m.key: m.value for m in gap.meta}
    assert int(meta["first_seq"]) == first_missed and int(meta["count"]) >= 1
    missed = [e for e in mine if first_missed <= e["seq"] <= int(meta["last_seq"]) and e["kind"] == "record"]
    assert len(missed) >= int(meta["count"])  # every missed record is readable from the journal
    assert got[-1].type.endswith("get-container-status")  # and queuing goes on


def test_audit_read_is_refused_on_bad_input(cmld_factory: DaemonFactory) -> None:
    d = cmld_factory.start(device_conf=CONF)
    r = cli(d.socket, "audit", "no-such-container")
    assert r.rc == 1 and "no container" in r.err
    assert cli(d.socket, "audit", "--bogus").rc == 2
    entries = journal_entries(d)
    assert entries[0]["type"] == "SSA.CMLD.GENERIC.cmld-start" and entries[0]["stored_for"] == C0_UUID
    # a raw AUDIT_READ with hostile numbers: answered, bounded
    from cml_common.messages.control_pb2 import ControllerToDaemon as C
    from cml_control.client import ControlClient

    with ControlClient(d.socket) as c:
        reply = c.request(C(command=C.AUDIT_READ, audit_after_seq=(1 << 64) - 1, audit_wait=0, audit_limit=1 << 40))
        assert reply.audit_head_seq >= 1 and not reply.audit_entries
        reply = c.request(C(command=C.AUDIT_READ, audit_limit=1, container_uuids=["../../etc/passwd"]))
        assert not reply.audit_entries
    off = cmld_factory.start(name="off")
    r = cli(off.socket, "audit")
    assert r.rc == 1 and "auditing is off" in r.err
    assert not json.dumps(r.out).count("seq")


@pytest.mark.req("CR 3.4 (2)")
def test_a_tampered_journal_is_reported_at_start(cmld_factory: DaemonFactory) -> None:
    """CR 3.4(2): cmld verifies the journal it finds and records what is wrong with it."""
    from .auditlib import edit_record_time

    d = cmld_factory.start(device_conf=CONF)
    for _ in range(3):
        assert cli(d.socket, "list").rc == 0
    assert d.stop() == 0
    clean = cmld_factory.start(device_conf=CONF, base=d.base, name="cmld-clean")
    assert not of_type(journal_entries(clean), "journal-integrity")  # an untouched journal passes
    assert clean.stop() == 0
    journal = d.base / "audit" / "journal.log"
    lines = journal.read_text().splitlines()
    lines[1] = edit_record_time(lines[1], -60)
    journal.write_text("\n".join(lines) + "\n")
    again = cmld_factory.start(device_conf=CONF, base=d.base, name="cmld-again")
    (bad,) = of_type(journal_entries(again), "FSA.CMLD.GENERIC.journal-integrity")
    assert "line 2 (seq 2): hash does not match the entry: edited" in bad["meta"]["first"]
    assert "journal-integrity" in (d.base / "audit" / f"{C0_UUID}.log").read_text()  # c0's reader gets it


@pytest.mark.req("CR 2.8")
def test_seccomp_denials_are_recorded(cmld_factory: DaemonFactory, guestos_src: Path) -> None:
    """A refused mknod of /dev/mem in a container: recorded once, at once, with the syscall."""
    from .containers import run

    base = cmld_factory.tmp / "cmld-base"
    install_guestos(guestos_src, base)
    d = cmld_factory.start(base=base, device_conf=CONF)
    create(d, cmld_factory.tmp, "app")
    assert cli(d.socket, "start", "app").rc == 0
    wait_state(d, "app", "RUNNING")
    for _ in range(3):
        r = run(d, "app", "/bin/mknod", "/tmp/mem", "c", "1", "1")
        assert r.rc != 0
    uuid = uuid_of(d, "app")
    denied = [e for e in of_type(journal_entries(d, "app"), "FSA.CMLD.CONTAINER_ISOLATION.seccomp-denied")
              if e["meta"]["syscall"] in ("mknod", "mknodat")]  # (busybox init's reboot(CAD_OFF) is one too)
    assert len(denied) == 1 and denied[0]["subject_id"] == uuid, [(e["seq"], e["meta"]) for e in denied]
    assert denied[0]["meta"]["syscall"] in ("mknod", "mknodat") and "client_uid" not in denied[0]["meta"]
    assert cli(d.socket, "stop", "app").rc == 0
