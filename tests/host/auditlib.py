"""Helpers for the audit tests: an audit reader speaking the original's service protocol (as a c0
reader written for the original would), the journal's entries as JSON, and the tamper tools."""

from __future__ import annotations

import base64
import hashlib
import json
import socket
import time
from pathlib import Path
from typing import Any

from cml_common import framing
from cml_common.auditlog.entry import parse_line
from cml_common.messages.audit_pb2 import AuditRecord
from cml_common.messages.c_service_pb2 import CmldToServiceMessage, ServiceToCmldMessage

from ..conftest import Daemon, cli

C2S = CmldToServiceMessage
S2C = ServiceToCmldMessage
ZERO_ACK = "0" * 128


def init_pid(run_dir: Path, uuid: str) -> int:
    rec = json.loads((run_dir / "records" / f"{uuid}.json").read_text())
    return int(rec["init_pid"])


class ServiceReader:
    """A client of a container's /run/socket/cml-service, reached through /proc/<init>/root."""

    def __init__(self, pid: int) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(10)
        self.sock.connect(f"/proc/{pid}/root/run/socket/cml-service")
        self.notifies: list[int] = []

    def close(self) -> None:
        self.sock.close()

    def send(self, msg: ServiceToCmldMessage) -> None:
        framing.send_frame(self.sock, framing.serialize(msg))

    def recv(self) -> tuple[bytes, CmldToServiceMessage]:
        """The next message that is not an AUDIT_NOTIFY (those are collected)."""
        while True:
            body = framing.recv_frame(self.sock)
            assert body is not None, "cmld closed the service connection"
            msg = framing.parse(C2S, body)
            if msg.code == C2S.AUDIT_NOTIFY:
                self.notifies.append(msg.audit_remaining_storage)
                continue
            return body, msg

    def wait_notify(self, timeout: float = 10, idle: float = 0.5) -> int:
        """Collect AUDIT_NOTIFYs until none came for `idle` seconds; the last remaining value."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self.sock.settimeout(idle if self.notifies else max(0.1, deadline - time.monotonic()))
            try:
                body = framing.recv_frame(self.sock)
            except TimeoutError:
                break
            assert body is not None
            msg = framing.parse(C2S, body)
            assert msg.code == C2S.AUDIT_NOTIFY, msg
            self.notifies.append(msg.audit_remaining_storage)
        self.sock.settimeout(10)
        assert self.notifies, "no AUDIT_NOTIFY"
        return self.notifies[-1]

    def pull_all(self) -> list[AuditRecord]:
        """The original reader's loop: ACK zeros, then ACK SHA-512 of each exact body received."""
        got: list[AuditRecord] = []
        ack = ZERO_ACK
        while True:
            self.send(S2C(code=S2C.AUDIT_ACK, audit_ack=ack))
            body, msg = self.recv()
            if msg.code == C2S.AUDIT_COMPLETE:
                return got
            assert msg.code == C2S.AUDIT_RECORD, msg
            got.append(msg.audit_record)
            ack = hashlib.sha512(body).hexdigest()


def journal_entries(d: Daemon, *args: str) -> list[dict[str, Any]]:
    r = cli(d.socket, "audit", "--json", *args)
    assert r.rc == 0, r.err
    return [json.loads(line) for line in r.out.splitlines()]


def of_type(entries: list[dict[str, Any]], suffix: str) -> list[dict[str, Any]]:
    return [e for e in entries if e["kind"] == "record" and e["type"].endswith(suffix)]


def rechain(lines: list[str], sign: Any | None = None) -> list[str]:
    """Recompute every hash after an edit, as an attacker with write access would; checkpoints
    are re-signed with `sign(statement) -> (sig, cert_pem)` when given, else kept as they are."""
    from cml_common.auditlog.entry import CHECKPOINT, GENESIS
    from cml_common.auditlog.seal import statement

    out, prev = [], GENESIS
    for n, line in enumerate(lines, 1):
        e = parse_line(line)
        e.seq, e.prev = n, prev
        if e.kind == CHECKPOINT:
            e.covers, e.covers_hash = n - 1, prev
            if sign is not None:
                sig, cert = sign(statement(e.covers, e.covers_hash, e.time))
                e.sig, e.cert = sig, cert
        e.seal()
        prev = e.hash
        out.append(e.line())
    return out


def edit_record_time(line: str, delta: int) -> str:
    d = json.loads(line)
    r = AuditRecord()
    r.ParseFromString(base64.b64decode(d["record"]))
    r.timestamp += delta
    d["record"] = base64.b64encode(r.SerializeToString(deterministic=True)).decode()
    return json.dumps(d, sort_keys=True, separators=(",", ":"))
