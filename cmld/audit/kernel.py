"""cmld as the kernel's audit daemon (the original's audit_init): a NETLINK_AUDIT socket, an
AUDIT_SET that enables auditing and names cmld's PID as the daemon, and every record the kernel
then sends stored through the auditor (kparse.py says which record each message becomes).

The kernel has one audit daemon per machine, so this is a device setting: device.conf
`audit_kernel: true` (an extension, off by default, never on a shared development host). The
registration is undone (AUDIT_SET pid 0) when cmld stops; if cmld dies, the kernel drops it at
the next record it cannot deliver.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import os
import re
import socket
import struct
from collections.abc import Callable
from pathlib import Path
from typing import Protocol

from cml_common.messages.audit_pb2 import AuditRecord

from . import kparse

log = logging.getLogger(__name__)

NETLINK_AUDIT = 9
AUDIT_SET = 1001
AUDIT_STATUS_ENABLED, AUDIT_STATUS_PID = 0x1, 0x4
NLM_F_REQUEST, NLM_F_ACK = 0x1, 0x4
STATUS = struct.Struct("=11I")  # struct audit_status (mask, enabled, failure, pid, ...)
RCVBUF = 4 << 20
SYS_BLOCK = Path("/sys/dev/block")
PROC = Path("/proc")
_DEV = re.compile(r"^\d{1,9}:\d{1,9}$")


class KernelAuditError(OSError):
    pass


class Auditor(Protocol):
    """What of the auditor this needs (auditor.Auditor; a recorder in the unit tests)."""
    @property
    def known(self) -> Callable[[str], bool]: ...

    def log_event(self, category: str, evclass: str, event: str, subject: str | None,
                  meta: dict[str, str]) -> None: ...

    def store(self, record: AuditRecord, uuid: str | None) -> int: ...


def set_status(mask: int, enabled: int, pid: int, seq: int) -> bytes:
    body = STATUS.pack(mask, enabled, 0, pid, 0, 0, 0, 0, 0, 0, 0)
    return kparse.NLMSG_HDR.pack(kparse.NLMSG_HDR.size + len(body), AUDIT_SET, NLM_F_REQUEST | NLM_F_ACK,
                                 seq, 0) + body


def dm_name(dev: str, sys_block: Path = SYS_BLOCK) -> str:
    if not _DEV.match(dev):
        return ""
    try:
        return (sys_block / dev / "dm" / "name").read_text(errors="replace").strip()[:256]
    except OSError:
        return ""


def container_of_pid(pid: int, auditor: Auditor, proc: Path = PROC) -> str | None:
    """The container whose cgroup the sender is in (the original asks which container's user
    namespace holds the uid); None when it is none or gone."""
    if pid <= 0:
        return None
    try:
        lines = (proc / str(pid) / "cgroup").read_text(errors="replace").splitlines()
    except OSError:
        return None
    for line in lines:
        for part in line.split(":", 2)[-1].split("/"):
            if len(part) == 36 and auditor.known(part):
                return part
    return None


def store(auditor: Auditor, mtype: int, payload: bytes, *, sys_block: Path = SYS_BLOCK, proc: Path = PROC) -> bool:
    """Store one kernel message as a record; False when its type is no audit record."""
    rec = kparse.to_record(mtype, payload)
    if rec is None:
        return False
    subject: str | None = None
    if rec.dm_name_of:
        name = dm_name(rec.dm_name_of, sys_block)
        if name:
            rec.meta["label"] = name
            subject = name[:36] if auditor.known(name[:36]) else None
    elif rec.pid:
        subject = container_of_pid(rec.pid, auditor, proc)
    if rec.embedded is not None:
        auditor.store(rec.embedded, subject)
        return True
    auditor.log_event(rec.category, rec.evclass, rec.event, subject, rec.meta)
    return True


class KernelAudit:
    def __init__(self, auditor: Auditor) -> None:
        self.auditor = auditor
        self.sock: socket.socket | None = None
        self.seq = 0
        self.received = 0
        self.malformed = 0
        self.lost = 0

    def register(self, timeout: float = 5.0) -> None:
        """Open the socket and become the audit daemon; KernelAuditError with the kernel's answer."""
        sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW | socket.SOCK_CLOEXEC, NETLINK_AUDIT)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, RCVBUF)
            sock.bind((0, 0))
            sock.settimeout(timeout)
            self.sock = sock
            self._request(AUDIT_STATUS_ENABLED | AUDIT_STATUS_PID, 1, os.getpid())
            sock.setblocking(False)
        except OSError as e:
            self.sock = None
            sock.close()
            raise KernelAuditError(e.errno or errno.EIO, f"cannot register as the kernel's audit daemon: {e}") from e

    def _request(self, mask: int, enabled: int, pid: int) -> None:
        """Send an AUDIT_SET and wait for its ACK; records arriving meanwhile are stored."""
        assert self.sock is not None
        self.seq += 1
        self.sock.send(set_status(mask, enabled, pid, self.seq))
        while True:
            data = self.sock.recv(65536)
            batch, problem = kparse.frames(data)
            for f in batch:
                if f.type == kparse.NLMSG_ERROR and f.seq == self.seq:
                    code = kparse.error_of(f)
                    if code:
                        raise OSError(code if code > 0 else errno.EPROTO, os.strerror(code) if code > 0 else
                                      "truncated netlink error")
                    return
                self._store(f)
            if problem:
                raise OSError(errno.EPROTO, f"malformed netlink reply: {problem}")

    def start(self) -> None:
        assert self.sock is not None
        asyncio.get_running_loop().add_reader(self.sock.fileno(), self._readable)
        log.info("kernel audit: cmld (pid %d) is the kernel's audit daemon", os.getpid())

    def _readable(self) -> None:
        assert self.sock is not None
        for _ in range(64):  # then let the loop serve others; the reader fires again
            try:
                data = self.sock.recv(65536)
            except BlockingIOError:
                return
            except OSError as e:
                if e.errno == errno.ENOBUFS:
                    self.lost += 1
                    self.auditor.log_event("FSA", "KAUDIT", "kernel-audit-overrun", None,
                                           {"overruns": str(self.lost), "error": str(e)})
                    continue
                log.error("kernel audit: receive failed: %s", e)
                return
            batch, problem = kparse.frames(data)
            for f in batch:
                self._store(f)
            if problem:
                self.malformed += 1
                log.warning("kernel audit: malformed datagram (%d so far): %s", self.malformed, problem)

    def _store(self, f: kparse.Frame) -> None:
        try:
            if store(self.auditor, f.type, f.payload):
                self.received += 1
        except Exception:
            log.exception("kernel audit: message of type %d not stored", f.type)

    def close(self) -> None:
        sock, self.sock = self.sock, None
        if sock is None:
            return
        with contextlib.suppress(RuntimeError):
            asyncio.get_running_loop().remove_reader(sock.fileno())
        try:
            sock.send(set_status(AUDIT_STATUS_PID, 0, 0, self.seq + 1))  # no longer the daemon
        except OSError as e:
            log.info("kernel audit: unregistering failed: %s", e)
        sock.close()
