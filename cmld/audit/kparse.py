"""The kernel's audit messages as audit records: pure parsing, no socket (kernel.py has that).

A netlink datagram from NETLINK_AUDIT holds one or more `nlmsghdr`s; each audit message is a
type number and a text such as `audit(1796614015.123:45): op=set audit_pid=412 old=0 res=1`.
The text becomes the record's meta: `audit_type` (number), `audit_name` (e.g. `CONFIG_CHANGE`),
`audit_id` (`seconds.millis:serial`, the kernel's event id that ties records of one event
together), every `key=value` field (values unquoted), and `msg` (the whole text, as the
original stores it).

Which records and how (the original's daemon/audit.c): device-mapper events (DM_EVENT, e.g.
dm-integrity's checksum failures) become `CONTAINER_MGMT.dm-audit` with `op`, `label` (the dm
device's name) and `sector`, about the container whose UUID starts that name; a TRUSTED_APP message
(an original scd's or tpm2d's AuditRecord as protobuf text) is stored as the record it carries;
other user-space messages (USER, LOGIN, 1100-1199, 2100-2999) and DM_CTRL become `KAUDIT.<name>`, a success or a failure
after their `res=`; the kernel's own records (1300-1899, 2000) are stored as `KAUDIT.<name>` too
(the original only traces them).
"""

from __future__ import annotations

import re
import struct
from dataclasses import dataclass, field

from google.protobuf import text_format

from cml_common.messages.audit_pb2 import AuditRecord

NLMSG_HDR = struct.Struct("=IHHII")  # len, type, flags, seq, pid
NLMSG_ERROR = 2
NLMSG_DONE = 3
MAX_MESSAGE = 8970  # the kernel's MAX_AUDIT_MESSAGE_LENGTH
MAX_FIELDS = 64

NAMES = {
    1005: "USER", 1006: "LOGIN", 1100: "USER_AUTH", 1101: "USER_ACCT", 1102: "USER_MGMT", 1103: "CRED_ACQ",
    1104: "CRED_DISP", 1105: "USER_START", 1106: "USER_END", 1107: "USER_AVC", 1108: "USER_CHAUTHTOK",
    1109: "USER_ERR", 1110: "CRED_REFR", 1111: "USYS_CONFIG", 1112: "USER_LOGIN", 1113: "USER_LOGOUT",
    1121: "TRUSTED_APP", 1123: "USER_CMD", 1124: "USER_TTY", 1127: "SYSTEM_BOOT", 1128: "SYSTEM_SHUTDOWN",
    1130: "SERVICE_START", 1131: "SERVICE_STOP",
    1300: "SYSCALL", 1302: "PATH", 1303: "IPC", 1304: "SOCKETCALL", 1305: "CONFIG_CHANGE", 1306: "SOCKADDR",
    1307: "CWD", 1309: "EXECVE", 1316: "KERNEL_OTHER", 1318: "OBJ_PID", 1320: "EOE", 1321: "BPRM_FCAPS",
    1322: "CAPSET", 1323: "MMAP", 1324: "NETFILTER_PKT", 1325: "NETFILTER_CFG", 1326: "SECCOMP",
    1327: "PROCTITLE", 1328: "FEATURE_CHANGE", 1330: "KERN_MODULE", 1331: "FANOTIFY", 1334: "BPF",
    1335: "EVENT_LISTENER", 1336: "URINGOP", 1337: "OPENAT2", 1338: "DM_CTRL", 1339: "DM_EVENT",
    1400: "AVC", 1401: "SELINUX_ERR", 1403: "MAC_POLICY_LOAD", 1404: "MAC_STATUS", 1700: "ANOM_PROMISCUOUS",
    1701: "ANOM_ABEND", 1702: "ANOM_LINK", 1703: "ANOM_CREAT", 1800: "INTEGRITY_DATA",
    1801: "INTEGRITY_METADATA", 1802: "INTEGRITY_STATUS", 1803: "INTEGRITY_HASH", 1804: "INTEGRITY_PCR",
    1805: "INTEGRITY_RULE", 1806: "INTEGRITY_EVM_XATTR", 1807: "INTEGRITY_POLICY_RULE", 2000: "KERNEL",
}
AUDIT_TRUSTED_APP = 1121
AUDIT_USER, AUDIT_LOGIN, AUDIT_DM_CTRL, AUDIT_DM_EVENT, AUDIT_KERNEL = 1005, 1006, 1338, 1339, 2000


def type_name(t: int) -> str:
    return NAMES.get(t, f"TYPE_{t}")


@dataclass
class Frame:
    """One netlink message: its type and payload (the text, or an NLMSG_ERROR's errno)."""
    type: int
    seq: int
    payload: bytes


def frames(datagram: bytes) -> tuple[list[Frame], str]:
    """The messages in one datagram and what was wrong with it ('' when nothing).

    The kernel sends each audit record alone in its datagram with `nlmsg_len` set to the length of
    the text without the header (auditd reads the datagram's length instead, as we do), so an
    audit record's text is the rest of the datagram. Netlink's own messages (the ACK, errors) have
    true lengths and are walked; a length that is too short, runs past the datagram or past the
    kernel's message limit ends the walk there."""
    if len(datagram) >= NLMSG_HDR.size:
        length, mtype, _flags, seq, _pid = NLMSG_HDR.unpack_from(datagram)
        if is_user(mtype) or is_kernel(mtype):
            text = datagram[NLMSG_HDR.size:]
            if len(text) > MAX_MESSAGE + 64:
                return [], f"an audit message of {len(text)} bytes, more than the kernel sends"
            if length > len(datagram):
                return [], f"an audit message claims {length} bytes, {len(datagram)} there"
            return [Frame(mtype, seq, text)], ""
    out: list[Frame] = []
    off = 0
    while off < len(datagram):
        if len(datagram) - off < NLMSG_HDR.size:
            return out, f"{len(datagram) - off} byte(s) after the last message are no netlink header"
        length, mtype, _flags, seq, _pid = NLMSG_HDR.unpack_from(datagram, off)
        if length < NLMSG_HDR.size or length > len(datagram) - off:
            return out, f"message at {off} claims {length} bytes, {len(datagram) - off} there"
        if length - NLMSG_HDR.size > MAX_MESSAGE + 64:
            return out, f"message at {off} claims {length} bytes, more than an audit message"
        out.append(Frame(mtype, seq, datagram[off + NLMSG_HDR.size: off + length]))
        off += (length + 3) & ~3
    return out, ""


def error_of(frame: Frame) -> int:
    """An NLMSG_ERROR's errno (0 is the ACK); -1 when the frame is too short to say."""
    if len(frame.payload) < 4:
        return -1
    code: int = struct.unpack_from("=i", frame.payload)[0]
    return -code


def text_of(payload: bytes) -> str:
    """The text up to its first NUL, bytes that are not UTF-8 kept as \\xNN escapes."""
    return payload.split(b"\0", 1)[0][:MAX_MESSAGE].decode("utf-8", "backslashreplace")


_HEADER = re.compile(r"^audit\((\d+)\.(\d+):(\d+)\):\s*")
_FIELD = re.compile(r"""([A-Za-z_][A-Za-z0-9_-]*)=('[^']*'|"[^"]*"|[^\s'"]*)""")


def fields(text: str) -> tuple[str, dict[str, str]]:
    """The audit id and the top-level `key=value` fields; a field repeated keeps its first
    value; text inside a quoted value is not split (a user message's msg='...' is one field)."""
    audit_id = ""
    m = _HEADER.match(text)
    if m:
        audit_id = f"{m.group(1)}.{m.group(2)}:{m.group(3)}"
        text = text[m.end():]
    out: dict[str, str] = {}
    for fm in _FIELD.finditer(text):
        key, value = fm.group(1), fm.group(2)
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
            value = value[1:-1]
        if key not in out and len(out) < MAX_FIELDS:
            out[key] = value
    return audit_id, out


@dataclass
class KernelRecord:
    category: str  # SSA / FSA
    evclass: str
    event: str
    meta: dict[str, str] = field(default_factory=dict)
    dm_name_of: str = ""  # DM_EVENT: the dev (major:minor) whose dm name names the container
    pid: int = 0  # user messages: the sender, whose cgroup names the container
    embedded: AuditRecord | None = None  # TRUSTED_APP: the record another component sent


def _succeeded(res: str) -> bool:
    return res in ("1", "success", "yes")


def _result(fields_: dict[str, str]) -> str:
    """`res=` at the top level, else inside the user message (`msg='op=... res=success'`)."""
    for key in ("res", "success"):
        if key in fields_:
            return fields_[key]
    m = re.search(r"\bres=([A-Za-z0-9]+)", fields_.get("msg", ""))
    return m.group(1) if m else "failed"


def is_user(t: int) -> bool:
    return t in (AUDIT_USER, AUDIT_LOGIN) or 1100 <= t <= 1199 or 2100 <= t <= 2999


def is_kernel(t: int) -> bool:
    return t == AUDIT_KERNEL or 1300 <= t <= 1899


def trusted_app(text: str) -> AuditRecord | None:
    """The AuditRecord (protobuf text) an original component (scd, tpm2d) sent through the
    kernel as AUDIT_TRUSTED_APP: everything from `msg='` to the last `'`; None when it is not one."""
    start = text.find("msg='")
    end = text.rfind("'")
    if start < 0 or end <= start + 5:
        return None
    r = AuditRecord()
    try:
        text_format.Parse(text[start + 5:end], r)
    except (text_format.ParseError, UnicodeError, ValueError):
        return None
    return r if r.IsInitialized() else None


def to_record(mtype: int, payload: bytes) -> KernelRecord | None:
    """The record for one audit message; None for types that are no audit record (netlink
    control messages, replies to requests)."""
    if not (is_user(mtype) or is_kernel(mtype)):
        return None
    text = text_of(payload)
    audit_id, fl = fields(text)
    meta = {"audit_type": str(mtype), "audit_name": type_name(mtype), "audit_id": audit_id}
    for k, v in fl.items():
        meta.setdefault(k, v)
    meta["msg"] = text
    res = _result(fl)
    category = "SSA" if _succeeded(res) else "FSA"
    if mtype == AUDIT_DM_EVENT:
        meta.update(op=fl.get("op", ""), label=fl.get("dev", ""), sector=fl.get("sector", ""))
        return KernelRecord(category, "CONTAINER_MGMT", "dm-audit", meta, dm_name_of=fl.get("dev", ""))
    pid = fl.get("pid", "")
    return KernelRecord(category, "KAUDIT", type_name(mtype), meta,
                        pid=int(pid) if pid.isdigit() and len(pid) < 10 else 0,
                        embedded=trusted_app(text) if mtype == AUDIT_TRUSTED_APP else None)
