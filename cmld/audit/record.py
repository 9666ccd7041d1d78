"""AuditRecord construction and the original's on-disk text form.

The type is `<CATEGORY>.<COMPONENT>.<CLASS>.<event>` with the original's names (inventory §2.8):
SUA/FUA a user's (control client's) action succeeded/failed, SSA/FSA the same for a system action.
In the queue files a record is the protobuf text format followed by the line `-----`.
"""

from __future__ import annotations

import time

from google.protobuf import text_format

from cml_common.messages.audit_pb2 import AuditRecord

CATEGORIES = ("SUA", "FUA", "SSA", "FSA", "RLE")
COMPONENTS = ("CMLD", "SCD", "TPM2D")
CLASSES = ("GENERIC", "GUESTOS_MGMT", "TOKEN_MGMT", "CONTAINER_MGMT", "CONTAINER_ISOLATION", "TPM_COMM", "KAUDIT")
DELIMITER = "-----\n"
MAX_META_VALUE = 4096  # a longer value is cut (and says so): records stay small


def make_record(category: str, evclass: str, event: str, subject: str | None,
                meta: dict[str, str], *, component: str = "CMLD", now: float | None = None) -> AuditRecord:
    if category not in CATEGORIES or evclass not in CLASSES or component not in COMPONENTS:
        raise ValueError(f"bad audit type {category}.{component}.{evclass}")
    r = AuditRecord(timestamp=int(time.time() if now is None else now),
                    type=f"{category}.{component}.{evclass}.{event}")
    if subject:
        r.subject_id = subject
    for k, v in meta.items():
        value = str(v)
        if len(value) > MAX_META_VALUE:
            value = value[:MAX_META_VALUE] + f"...[{len(value) - MAX_META_VALUE} more bytes cut]"
        r.meta.add(key=k, value=value)
    return r


_ESCAPES = {i: f"\\{i:03o}" for i in range(128) if not 32 <= i < 127}
_ESCAPES.update({ord("\t"): "\\t", ord("\n"): "\\n", ord("\r"): "\\r", ord('"'): '\\"', ord("'"): "\\'",
                 ord("\\"): "\\\\"})


def _quote(s: str) -> str:
    return '"' + s.translate(_ESCAPES) + '"'


def to_text(r: AuditRecord) -> str:
    """What `text_format.MessageToString(r, as_utf8=True)` gives (a unit test compares them),
    written out directly: the generic printer was half of the cost of storing a record."""
    out = [f"timestamp: {r.timestamp}\n", f"type: {_quote(r.type)}\n"]
    if r.HasField("subject_id"):
        out.append(f"subject_id: {_quote(r.subject_id)}\n")
    for m in r.meta:
        out.append(f"meta {{\n  key: {_quote(m.key)}\n  value: {_quote(m.value)}\n}}\n")
    return "".join(out)


def from_text(text: str) -> AuditRecord:
    """The record in one queue entry; a damaged one becomes the original's `corrupt-record` with
    the raw text kept as meta, so it is still delivered and never silently dropped."""
    r = AuditRecord()
    try:
        text_format.Parse(text, r)
        if r.IsInitialized():
            return r
    except text_format.ParseError:
        pass
    return make_record("FSA", "GENERIC", "corrupt-record", None, {"raw_text": text})


def meta_of(r: AuditRecord) -> dict[str, str]:
    return {m.key: m.value for m in r.meta}
