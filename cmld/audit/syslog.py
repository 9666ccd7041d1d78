"""Journal entries as RFC 5424 syslog messages, framed for RFC 5425 (TLS) by octet counting.

    <PRI>1 TIMESTAMP HOST cmld - TYPE [cml@32473 seq="N" hash="..." stored_for="..."][meta@32473 ...] BOM text

Facility 13 (log audit); severity notice for successful actions, warning for failed ones.
Every message carries the journal's sequence number and entry hash, so a collector can spot a
duplicate (delivery is at least once) and check the copy against the device's signed chain;
checkpoints are forwarded too, which gives the collector the anchors `audit verify --anchor`
takes.
"""

from __future__ import annotations

import base64
import re
import time

from cml_common.auditlog.entry import CHECKPOINT, Entry
from cml_common.messages.audit_pb2 import AuditRecord

FACILITY_AUDIT = 13
NOTICE, WARNING = 5, 4
ENTERPRISE = "32473"  # the example private enterprise number of RFC 5612
_NAME_BAD = re.compile(r'[^\x21-\x7e]|[= \]"]')
_MSGID_BAD = re.compile(r"[^\x21-\x7e]")


def _param_name(key: str) -> str:
    return (_NAME_BAD.sub("_", key) or "_")[:32]


def _param_value(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("]", "\\]")


def _sd(sd_id: str, params: dict[str, str]) -> str:
    inner = "".join(f' {_param_name(k)}="{_param_value(v)}"' for k, v in params.items())
    return f"[{sd_id}@{ENTERPRISE}{inner}]"


def _timestamp(t: int) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(t))


def format_entry(e: Entry, hostname: str) -> bytes:
    host = _MSGID_BAD.sub("_", hostname)[:255] or "-"
    base = {"seq": str(e.seq), "hash": e.hash}
    if e.kind == CHECKPOINT:
        pri = FACILITY_AUDIT * 8 + NOTICE
        sd = _sd("cml", {**base, "covers": str(e.covers), "covers_hash": e.covers_hash,
                         "sig": base64.b64encode(e.sig).decode()})
        text = f"checkpoint seals seq 1-{e.covers}"
        return f"<{pri}>1 {_timestamp(e.time)} {host} cmld - checkpoint {sd} \ufeff{text}".encode()
    r = AuditRecord()
    r.ParseFromString(e.record)
    failed = r.type.startswith(("FUA", "FSA"))
    pri = FACILITY_AUDIT * 8 + (WARNING if failed else NOTICE)
    meta = {m.key: m.value for m in r.meta}
    sd = _sd("cml", {**base, "stored_for": e.subject, "subject": r.subject_id})
    if meta:
        sd += _sd("meta", meta)
    msgid = _MSGID_BAD.sub("_", r.type)[:32] or "-"
    text = " ".join([r.type] + [f"{k}={v}" for k, v in meta.items()]).replace("\n", " ")
    return f"<{pri}>1 {_timestamp(r.timestamp)} {host} cmld - {msgid} {sd} \ufeff{text}".encode()


def octet_frame(msg: bytes) -> bytes:
    """RFC 5425 section 4.3: MSG-LEN SP SYSLOG-MSG."""
    return str(len(msg)).encode() + b" " + msg
