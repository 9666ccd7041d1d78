"""tpm2d's control socket (/run/socket/cml-tpm2d-control, stream): ControllerToTpm in,
TpmToController out, one reply per request (inventory §5.2).

| what a client sends | what happens |
|---|---|
| a valid request | the reply, computed on the TPM worker thread (the socket stays responsive) |
| EXIT | tpm2d stops, without a reply (as the original) |
| a body that does not parse, lacks `code`, or has an unknown code | CMD_FAILED with `error_message`; stays open |
| a length of 64 MiB or more, a truncated frame, a frame stalled > 10 s | disconnected, with a log line |
"""

from __future__ import annotations

import asyncio
import functools
import logging
from pathlib import Path

from google.protobuf.message import Message

from cml_common import framing
from cml_common.framed_server import Connection, FramedServer, PeerCred, ServerLimits, Transport
from cml_common.messages.tpm2d_pb2 import ControllerToTpm

from .core import Core, generic

log = logging.getLogger(__name__)
MAX_REQUEST = 1024 * 1024  # nothing tpm2d takes is larger (sign_data <= 64 KiB)
# cmld keeps one connection open for as long as it runs.
LIMITS = ServerLimits(idle_timeout=None, frame_timeout=10.0, max_clients=64, max_message=MAX_REQUEST)


def _malformed(body: bytes) -> Message:
    try:
        framing.parse(ControllerToTpm, body)
    except framing.MessageError as e:
        return generic(False, str(e))
    return generic(False, "malformed request")


class ControlServer:
    """tpm2d's policy for bad input (a reply with the reason, the connection kept) on the shared
    framed server."""

    def __init__(self, path: Path, core: Core, exit_event: asyncio.Event) -> None:
        self.path = path
        self.core = core
        self.exit_event = exit_event
        self.server: FramedServer[ControllerToTpm, Connection] = FramedServer(
            "tpm2d control", ControllerToTpm, self.handle, make_connection=self._connection,
            on_malformed=_malformed, on_handler_error=lambda _req: generic(False, "internal error (see tpm2d's log)"),
            limits=LIMITS)

    @staticmethod
    def _connection(ident: int, peer: PeerCred, transport: Transport) -> Connection:
        return Connection(ident, peer, transport, "tpm2d control")

    async def start(self) -> None:
        await self.server.listen(self.path, mode=0o600)

    async def close(self) -> None:
        await self.server.close()

    async def handle(self, req: ControllerToTpm, conn: Connection) -> None:
        if req.code == ControllerToTpm.EXIT:
            log.info("EXIT requested")
            self.exit_event.set()
            return
        loop = asyncio.get_running_loop()
        reply = await asyncio.wrap_future(self.core.submit(functools.partial(self.core.handle, req)), loop=loop)
        await conn.send(reply)
