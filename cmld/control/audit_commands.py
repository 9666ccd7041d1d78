"""Audit on the control socket: a record for every command (with its result and the client's
SO_PEERCRED uid and pid), and AUDIT_READ (extension), which `cml-control audit` uses.

The client's identity is put in the audit context for the whole command, so events recorded deep
inside it (a wrong PIN, a refused signature) name the client too.
"""

from __future__ import annotations

import contextvars
import logging

from cml_common.messages.control_pb2 import ControllerToDaemon, DaemonToController
from cmld.audit import events
from cmld.audit.auditor import Auditor
from cmld.control.server import ControlConnection
from cmld.errors import CmldError

log = logging.getLogger(__name__)
C = ControllerToDaemon
D = DaemonToController
MAX_ENTRIES = 1000
MAX_WAIT = 30
# What is not recorded: keystrokes of an exec session (they may be secrets) and the follow-up
# polls of an audit reader (it would record its own reading forever).
NOT_RECORDED = frozenset({C.CONTAINER_EXEC_INPUT})
SUCCESS_RESPONSES = frozenset({D.CMD_OK, D.CONTAINER_START_OK, D.CONTAINER_STOP_OK, D.CONTAINER_CHANGE_PIN_SUCCESSFUL,
                               D.DEVICE_CERT_OK, D.GUESTOS_MGR_INSTALL_COMPLETED, D.GUESTOS_MGR_INSTALL_STARTED,
                               D.GUESTOS_MGR_REGISTER_CA_OK})
CLASSES = {C.PUSH_GUESTOS_CONFIG: "GUESTOS_MGMT", C.REMOVE_GUESTOS: "GUESTOS_MGMT", C.REGISTER_LOCALCA: "GUESTOS_MGMT",
           C.REGISTER_NEWCA: "GUESTOS_MGMT", C.CONTAINER_CHANGE_TOKEN_PIN: "TOKEN_MGMT",
           C.CONTAINER_CMLD_HANDLES_PIN: "TOKEN_MGMT"}


def result_of(reply: DaemonToController | None) -> tuple[bool, str]:
    if reply is None:
        return True, "no reply"
    if reply.code == D.RESPONSE:
        name = D.Response.Name(reply.response) if reply.HasField("response") else "RESPONSE"
        return reply.response in SUCCESS_RESPONSES, name
    name = D.Code.Name(reply.code)
    if reply.error_message or (reply.code == D.CONTAINER_CONFIG and not reply.container_uuids):
        return False, f"{name} (failed)"  # create's answer, empty on failure (the original)
    return True, name


def bind_client(conn: ControlConnection) -> contextvars.Token[tuple[int, int] | None]:
    return events.client.set((conn.peer.uid, conn.peer.pid))


def record_command(req: ControllerToDaemon, conn: ControlConnection, reply: DaemonToController | None) -> None:
    if not events.enabled() or req.command in NOT_RECORDED or (req.command == C.AUDIT_READ and req.audit_after_seq):
        return
    ok, result = result_of(reply)
    name = C.Command.Name(req.command) if req.command in C.Command.values() else str(req.command)
    event = name.lower().replace("_", "-")
    meta = {"command": name, "result": result, "socket": "c0" if str(conn.caller_root) != "/" else "host"}
    if reply is not None and reply.error_message:
        meta["error"] = reply.error_message
    uuids = list(req.container_uuids)
    if uuids:
        meta["containers"] = ",".join(uuids)
    if req.command == C.CONTAINER_EXEC_CMD and req.exec_args:
        meta["exec"] = " ".join(req.exec_args)
    subject = uuids[0] if len(uuids) == 1 else None
    evclass = CLASSES.get(req.command, "CONTAINER_MGMT" if req.command >= C.CONTAINER_START else "GENERIC")
    events.emit_meta("SUA" if ok else "FUA", evclass, event, subject, meta)


class AuditCommands:
    def __init__(self, auditor: Auditor | None) -> None:
        self.auditor = auditor

    async def read(self, req: ControllerToDaemon, conn: ControlConnection) -> None:
        if self.auditor is None:
            raise CmldError("auditing is off (device.conf audit_size: 0)", D.CMD_UNSUPPORTED)
        subject = req.container_uuids[0] if req.container_uuids else None
        limit = min(req.audit_limit or MAX_ENTRIES, MAX_ENTRIES)
        wait = float(min(req.audit_wait, MAX_WAIT))
        lines = await self.auditor.read(req.audit_after_seq, limit, subject, wait)
        reply = D(code=D.AUDIT_ENTRIES, audit_head_seq=self.auditor.journal.last_seq)
        reply.audit_entries.extend(lines)
        await conn.send(reply)

