"""scd's control socket: SOCK_SEQPACKET, DaemonToToken in, TokenToDaemon out (inventory §4).

Tokens, PINs, wrapping, verification and provisioning arrive with the scd issue; this server
implements the transport, hashing and the event-listener registration, and answers every other
request with the original's CMD_UNKNOWN, never with a fake success.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
from pathlib import Path

from cml_common import aioframing, framing
from cml_common.messages.scd_pb2 import DaemonToToken, TokenToDaemon

from .hashing import ALGORITHMS, digest_buffer, digest_file

log = logging.getLogger(__name__)
T = TokenToDaemon


class ScdServer:
    def __init__(self, path: Path) -> None:
        self.path = path
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

    async def handle(self, req: DaemonToToken, conn: socket.socket) -> TokenToDaemon | None:
        code = req.code
        if code == DaemonToToken.CRYPTO_HASH_BUF:
            if req.hash_algo not in ALGORITHMS or not req.HasField("hash_buf"):
                return T(code=T.CRYPTO_HASH_ERROR)
            return T(code=T.CRYPTO_HASH_OK, hash_value=digest_buffer(req.hash_algo, req.hash_buf))
        if code == DaemonToToken.CRYPTO_HASH_FILE:
            if req.hash_algo not in ALGORITHMS or not req.hash_file:
                return T(code=T.CRYPTO_HASH_ERROR)
            try:
                value = await asyncio.to_thread(digest_file, req.hash_algo, Path(req.hash_file))
            except OSError as e:
                log.warning("cannot hash %s: %s", req.hash_file, e.strerror)
                return T(code=T.CRYPTO_HASH_ERROR)
            return T(code=T.CRYPTO_HASH_OK, hash_value=value)
        if code == DaemonToToken.REGISTER_EVENT_LISTENER:
            if self.listener is not None and self.listener is not conn:
                return T(code=T.REGISTER_EVENT_LISTENER_ERROR)
            self.listener = conn
            return T(code=T.REGISTER_EVENT_LISTENER_OK)
        log.warning("scd: %s is not implemented yet; answering CMD_UNKNOWN", DaemonToToken.Code.Name(code))
        return T(code=T.CMD_UNKNOWN)
