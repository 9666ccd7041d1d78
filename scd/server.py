"""scd's control socket on the shared framed server: SOCK_SEQPACKET, DaemonToToken in,
TokenToDaemon out (inventory §4). `service.Scd` answers the commands.

scd's policy for bad input is the original's: a request that does not decode closes the
connection; a handler's internal error is answered CMD_UNKNOWN and the connection stays. One
connection may register as the event listener (TOKEN_SE_REMOVED events go to it)."""

from __future__ import annotations

import logging
from pathlib import Path

from cml_common.framed_server import Connection, FramedServer, PeerCred, ServerLimits, Transport
from cml_common.messages.scd_pb2 import DaemonToToken, TokenToDaemon
from scd.service import Scd

log = logging.getLogger(__name__)
T = TokenToDaemon
# cmld keeps its event-listener and per-container connections open for as long as it runs.
LIMITS = ServerLimits(idle_timeout=None, frame_timeout=10.0, max_clients=256)


class ScdServer:
    def __init__(self, path: Path, service: Scd) -> None:
        self.path = path
        self.service = service
        self.listener: Connection | None = None
        self.server: FramedServer[DaemonToToken, Connection] = FramedServer(
            "scd", DaemonToToken, self.handle, make_connection=self._connection, on_malformed=None,
            on_handler_error=lambda _req: T(code=T.CMD_UNKNOWN), limits=LIMITS, seqpacket=True,
            on_close=self._closed)

    @staticmethod
    def _connection(ident: int, peer: PeerCred, transport: Transport) -> Connection:
        return Connection(ident, peer, transport, "scd")

    def _closed(self, conn: Connection) -> None:
        if conn is self.listener:
            self.listener = None

    async def start(self) -> None:
        await self.server.listen(self.path, mode=0o600)

    async def close(self) -> None:
        await self.server.close()

    async def send_event(self, event: TokenToDaemon) -> bool:
        """Send an unsolicited event (TOKEN_SE_REMOVED) to the registered listener, if any."""
        conn = self.listener
        if conn is None or conn.closed:
            return False
        await conn.send(event)
        return not conn.closed

    async def handle(self, req: DaemonToToken, conn: Connection) -> None:
        if req.code == DaemonToToken.REGISTER_EVENT_LISTENER:
            if self.listener is not None and self.listener is not conn:
                await conn.send(T(code=T.REGISTER_EVENT_LISTENER_ERROR))
                return
            self.listener = conn
            await conn.send(T(code=T.REGISTER_EVENT_LISTENER_OK))
            return
        reply = await self.service.handle(req)
        if reply is not None:
            await conn.send(reply)
