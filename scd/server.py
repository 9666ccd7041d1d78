"""scd's control socket: SOCK_SEQPACKET, DaemonToToken in, TokenToDaemon out (inventory §4).

The transport and the event-listener registration live here; `service.Scd` answers the commands.
Requests on one connection are answered in order; connections are served concurrently.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
from pathlib import Path

from cml_common import aioframing, framing
from cml_common.messages.scd_pb2 import DaemonToToken, TokenToDaemon

from .service import Scd

log = logging.getLogger(__name__)
T = TokenToDaemon


class ScdServer:
    def __init__(self, path: Path, service: Scd) -> None:
        self.path = path
        self.service = service
        self.sock: socket.socket | None = None
        self.listener: socket.socket | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._accept_task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()
        s = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET | socket.SOCK_CLOEXEC)
        s.bind(str(self.path))
        self.path.chmod(0o600)
        s.listen(8)
        s.setblocking(False)
        self.sock = s
        self._accept_task = asyncio.create_task(self._accept())
        log.info("scd listening on %s (SOCK_SEQPACKET)", self.path)

    async def close(self) -> None:
        if self._accept_task:
            self._accept_task.cancel()
        for t in list(self._tasks):
            t.cancel()
        if self.sock:
            self.sock.close()
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()

    async def _accept(self) -> None:
        loop = asyncio.get_running_loop()
        assert self.sock is not None
        while True:
            conn, _ = await loop.sock_accept(self.sock)
            conn.setblocking(False)
            task = asyncio.create_task(self._serve(conn))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _serve(self, conn: socket.socket) -> None:
        loop = asyncio.get_running_loop()
        try:
            while True:
                try:
                    body = await aioframing.async_recv_seqpacket(loop, conn)
                except framing.FramingError as e:
                    log.warning("scd client: %s; disconnecting", e)
                    return
                if body is None:
                    return
                try:
                    req = framing.parse(DaemonToToken, body)
                except framing.MessageError as e:
                    # As the original: an unparsable request closes the connection.
                    log.warning("scd client: %s; disconnecting", e)
                    return
                reply = await self.handle(req, conn)
                if reply is not None:
                    await aioframing.async_send_seqpacket(loop, conn, framing.serialize(reply))
        except OSError as e:
            log.info("scd client went away: %s", e)
        finally:
            if conn is self.listener:
                self.listener = None
            conn.close()

    async def send_event(self, event: TokenToDaemon) -> bool:
        """Send an unsolicited event (TOKEN_SE_REMOVED) to the registered listener, if any."""
        conn = self.listener
        if conn is None:
            return False
        try:
            await aioframing.async_send_seqpacket(asyncio.get_running_loop(), conn, framing.serialize(event))
        except OSError as e:
            log.warning("cannot send event to the listener: %s", e)
            return False
        return True

    async def handle(self, req: DaemonToToken, conn: socket.socket) -> TokenToDaemon | None:
        if req.code == DaemonToToken.REGISTER_EVENT_LISTENER:
            if self.listener is not None and self.listener is not conn:
                return T(code=T.REGISTER_EVENT_LISTENER_ERROR)
            self.listener = conn
            return T(code=T.REGISTER_EVENT_LISTENER_OK)
        try:
            return await self.service.handle(req)
        except Exception:
            # A bug in one handler must not take the daemon down for every other client.
            log.exception("scd: internal error handling %s", DaemonToToken.Code.Name(req.code))
            return T(code=T.CMD_UNKNOWN)
