"""cmld's control socket on the shared framed server: ControllerToDaemon in, DaemonToController out.

cmld's policy for bad input, as documented in the README: a well-framed request that does not
decode is answered (CMD_UNSUPPORTED for an unknown command value, CMD_FAILED otherwise) and the
connection stays; a handler's internal error is answered CMD_FAILED. Connections know whether
they are privileged (the host socket and c0's) and where relative file:// URLs of their pushes
resolve (the caller's root)."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from pathlib import Path

from google.protobuf import unknown_fields
from google.protobuf.message import Message

from cml_common import framing
from cml_common.framed_server import Connection, FramedServer, PeerCred, ServerLimits, Transport
from cml_common.messages.control_pb2 import ControllerToDaemon, DaemonToController
from cmld.control.replies import response

log = logging.getLogger(__name__)

__all__ = ["ControlConnection", "ControlServer", "ServerLimits", "unknown_command_value"]


class ControlConnection(Connection):
    def __init__(self, ident: int, peer: PeerCred, transport: Transport, *, privileged: bool,
                 caller_root: Path) -> None:
        super().__init__(ident, peer, transport, "control")
        self.privileged = privileged
        # "/" on the host socket, c0's root for the socket inside c0.
        self.caller_root = caller_root
        # The first reply of the command being handled (its audit record names the result).
        self.first_reply: DaemonToController | None = None

    async def send(self, msg: Message) -> None:
        if self.first_reply is None and isinstance(msg, DaemonToController):
            self.first_reply = msg
        await super().send(msg)


Handler = Callable[[ControllerToDaemon, ControlConnection], Awaitable[None]]


def unknown_command_value(body: bytes) -> int | None:
    """The numeric value of field 1 when it is not a known Command (proto2 keeps unknown enum
    values as unknown fields), so we can answer 'unsupported' instead of 'malformed'."""
    try:
        msg = framing.parse_partial(ControllerToDaemon, body)
    except framing.MessageError:
        return None
    if msg.HasField("command"):
        return None
    for f in unknown_fields.UnknownFieldSet(msg):  # type: ignore[attr-defined]
        if f.field_number == 1 and isinstance(f.data, int):
            return f.data - (1 << 64) if f.data >= 1 << 63 else f.data  # enums are signed int32
    return None


def malformed_reply(body: bytes) -> Message:
    value = unknown_command_value(body)
    if value is not None:
        log.warning("unknown command value %d; replying CMD_UNSUPPORTED", value)
        return response(DaemonToController.CMD_UNSUPPORTED)
    return response(DaemonToController.CMD_FAILED)


class ControlServer(FramedServer[ControllerToDaemon, ControlConnection]):
    def __init__(self, handler: Handler, *, limits: ServerLimits | None = None, privileged: bool = True,
                 on_close: Callable[[ControlConnection], None] | None = None,
                 caller_root: Path = Path("/")) -> None:
        def make(ident: int, peer: PeerCred, transport: Transport) -> ControlConnection:
            return ControlConnection(ident, peer, transport, privileged=privileged, caller_root=caller_root)

        super().__init__("control", ControllerToDaemon, handler, make_connection=make,
                         on_malformed=malformed_reply,
                         on_handler_error=lambda _req: response(DaemonToController.CMD_FAILED),
                         limits=limits, on_close=on_close)
