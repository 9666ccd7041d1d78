"""The one server loop of the daemons: framed protobuf requests in, replies out, on a Unix socket.

cmld (control socket, stream), scd (SOCK_SEQPACKET, two records per message) and tpm2d (stream)
differ only in the message types and in what they do with a well-framed body that does not
decode; that difference is an explicit parameter, `on_malformed`:

- a function giving the reply to send (cmld: CMD_FAILED, or CMD_UNSUPPORTED for an unknown
  command value), after which the connection stays open;
- None: the connection is closed, as the original's scd and tpm2d do.

A handler's bug (an exception it lets escape) is the other parameter, `on_handler_error`: the
reply to send before going on (cmld: CMD_FAILED), or None to close the connection. Either way it
is logged with its traceback and the daemon keeps serving everyone else.

Everything else is common and bounded: a frame that breaks the framing (too large, truncated),
stalls mid-frame longer than `frame_timeout`, or a client silent longer than `idle_timeout` is
disconnected with one log line; more than `max_clients` connections are refused (logged at most
once per REFUSAL_LOG_INTERVAL with the count: a container flooding the control socket cmld binds
into it made one line per connect before). What one client
can make the daemon log about its bad requests is bounded too (a `LogBudget` per connection), and
the loop is given back after every request, so one busy client never holds up the others.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import os
import socket
import stat
import struct
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Generic, TypeVar

from google.protobuf.message import Message

from cml_common import aioframing, framing
from cml_common.logbudget import LogBudget

log = logging.getLogger(__name__)
REFUSAL_LOG_INTERVAL = 10.0  # s: at most one line per this about connections refused at max_clients
Req = TypeVar("Req", bound=Message)
_UCRED = struct.Struct("3i")


@dataclass
class PeerCred:
    pid: int
    uid: int
    gid: int

    def __str__(self) -> str:
        return f"pid={self.pid} uid={self.uid}"


@dataclass
class ServerLimits:
    idle_timeout: float | None = 600.0  # no request for this long: disconnect
    frame_timeout: float = 10.0  # a started frame must complete within this
    max_clients: int = 256
    max_message: int = framing.MAX_MESSAGE_SIZE


def peer_cred(sock: socket.socket | None) -> PeerCred:
    if sock is None:
        return PeerCred(-1, -1, -1)
    try:
        raw = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, _UCRED.size)
        return PeerCred(*_UCRED.unpack(raw))
    except OSError:
        return PeerCred(-1, -1, -1)


class Transport:
    """One accepted socket, read and written frame by frame (stream or SEQPACKET framing)."""

    def __init__(self, sock: socket.socket, seqpacket: bool) -> None:
        sock.setblocking(False)
        self.sock = sock
        self.seqpacket = seqpacket
        self.loop = asyncio.get_running_loop()
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None
        self._wlock = asyncio.Lock()

    async def open(self) -> None:
        if not self.seqpacket:
            self._reader, self._writer = await asyncio.open_unix_connection(sock=self.sock)

    async def read(self, limits: ServerLimits) -> bytes | None:
        if self._reader is not None:
            return await aioframing.read_frame(self._reader, idle_timeout=limits.idle_timeout,
                                               frame_timeout=limits.frame_timeout, max_size=limits.max_message)
        async with asyncio.timeout(limits.idle_timeout):
            await aioframing.wait_readable(self.loop, self.sock)
        try:
            async with asyncio.timeout(limits.frame_timeout):
                return await aioframing.async_recv_seqpacket(self.loop, self.sock, limits.max_message)
        except TimeoutError as e:
            raise framing.FrameTimeout(f"frame not complete within {limits.frame_timeout:g} s") from e

    async def write(self, body: bytes) -> None:
        async with self._wlock:  # replies and events from several tasks never interleave
            if self._writer is not None:
                await aioframing.write_frame(self._writer, body)
            else:
                await aioframing.async_send_seqpacket(self.loop, self.sock, body)

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
        else:
            self.sock.close()


class Connection:
    """A client of a framed server. `send` never raises for a client that went away: what it
    asked for goes on (the original's clients may hang up right after a request)."""

    def __init__(self, ident: int, peer: PeerCred, transport: Transport, name: str) -> None:
        self.ident = ident
        self.peer = peer
        self.transport = transport
        self.name = name
        self.closed = False
        self.log_budget = LogBudget(str(self))

    def __str__(self) -> str:
        return f"{self.name} client #{self.ident} ({self.peer})"

    async def send(self, msg: Message) -> None:
        if self.closed:
            return
        body = framing.serialize(msg)
        try:
            await self.transport.write(body)
        except (ConnectionError, OSError) as e:
            self.closed = True
            log.info("%s went away before its reply (%s); the request is carried out anyway", self, e)


Conn = TypeVar("Conn", bound=Connection)
Handler = Callable[[Req, Conn], Awaitable[None]]
MalformedReply = Callable[[bytes], Message]
ErrorReply = Callable[[Message], Message]


class FramedServer(Generic[Req, Conn]):
    def __init__(self, name: str, request_type: type[Req], handler: Handler[Req, Conn], *,
                 make_connection: Callable[[int, PeerCred, Transport], Conn],
                 on_malformed: MalformedReply | None, on_handler_error: ErrorReply | None = None,
                 limits: ServerLimits | None = None, seqpacket: bool = False,
                 on_close: Callable[[Conn], None] | None = None) -> None:
        self.name = name
        self.request_type = request_type
        self.handler = handler
        self.make_connection = make_connection
        self.on_malformed = on_malformed
        self.on_handler_error = on_handler_error
        self.limits = limits or ServerLimits()
        self.seqpacket = seqpacket
        self.on_close = on_close
        self.path: Path | None = None
        self.clients: dict[int, Conn] = {}
        self._ids = itertools.count(1)
        self._refusals = 0  # connections refused at max_clients since the last log line about it
        self._refusal_logged = -REFUSAL_LOG_INTERVAL
        self._listener: socket.socket | None = None
        self._accept_task: asyncio.Task[None] | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    # ------------------------------------------------------------------ listening

    async def listen(self, path: Path, *, mode: int = 0o600, gid: int | None = None) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self._remove_stale_socket(path)
        kind = socket.SOCK_SEQPACKET if self.seqpacket else socket.SOCK_STREAM
        sock = socket.socket(socket.AF_UNIX, kind | socket.SOCK_CLOEXEC)
        try:
            sock.bind(str(path))
            if gid is not None:
                os.chown(path, -1, gid)
            os.chmod(path, mode)
            sock.listen(128)
        except OSError:
            sock.close()
            raise
        self.path = path
        await self.serve_socket(sock)
        log.info("%s listening on %s%s", self.name, path, " (SOCK_SEQPACKET)" if self.seqpacket else "")

    async def serve_socket(self, sock: socket.socket) -> None:
        """Serve a listening socket made elsewhere (c0's, bound inside c0 by the launcher)."""
        sock.setblocking(False)
        self._listener = sock
        self._accept_task = asyncio.create_task(self._accept(sock))

    @staticmethod
    def _remove_stale_socket(path: Path) -> None:
        try:
            st = path.lstat()
        except FileNotFoundError:
            return
        if not stat.S_ISSOCK(st.st_mode):
            raise RuntimeError(f"{path} exists and is not a socket; refusing to replace it")
        for kind in (socket.SOCK_STREAM, socket.SOCK_SEQPACKET):
            probe = socket.socket(socket.AF_UNIX, kind)
            try:
                probe.settimeout(1.0)
                probe.connect(str(path))
            except OSError:
                continue
            finally:
                probe.close()
            raise RuntimeError(f"another daemon is already listening on {path}")
        path.unlink()  # nobody listens: a leftover of a crashed daemon

    async def close(self) -> None:
        if self._accept_task is not None:
            self._accept_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._accept_task
            self._accept_task = None
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.wait(self._tasks, timeout=2)
        if self._listener is not None:
            self._listener.close()
            self._listener = None
        if self.path is not None:
            with contextlib.suppress(FileNotFoundError):
                self.path.unlink()

    # ------------------------------------------------------------------ serving

    async def _accept(self, listener: socket.socket) -> None:
        loop = asyncio.get_running_loop()
        while True:
            try:
                sock, _ = await loop.sock_accept(listener)
            except OSError as e:
                log.warning("%s: accept failed: %s", self.name, e)
                await asyncio.sleep(0.1)
                continue
            task = asyncio.create_task(self._serve(sock))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _serve(self, sock: socket.socket) -> None:
        transport = Transport(sock, self.seqpacket)
        conn = self.make_connection(next(self._ids), peer_cred(sock), transport)
        if len(self.clients) >= self.limits.max_clients:
            self._refusals += 1
            now = time.monotonic()
            if now - self._refusal_logged >= REFUSAL_LOG_INTERVAL:  # a flood of connects is not a flood of log
                more = f" ({self._refusals - 1} more refused since the last such line)" if self._refusals > 1 else ""
                log.warning("refusing %s: %d clients already connected%s", conn, len(self.clients), more)
                self._refusals, self._refusal_logged = 0, now
            transport.close()
            return
        self.clients[conn.ident] = conn
        log.debug("%s connected", conn)
        try:
            await transport.open()
            await self._loop(conn)
        except (ConnectionError, BrokenPipeError) as e:
            log.info("%s went away: %s", conn, e)
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("%s: internal error; connection closed", conn)
        finally:
            conn.closed = True
            conn.log_budget.flush()
            del self.clients[conn.ident]
            if self.on_close is not None:
                self.on_close(conn)
            transport.close()
            log.debug("%s disconnected", conn)

    async def _loop(self, conn: Conn) -> None:
        while True:
            try:
                body = await conn.transport.read(self.limits)
            except TimeoutError:
                log.warning("%s: no request within %g s; disconnecting", conn, self.limits.idle_timeout or 0)
                return
            except framing.FramingError as e:
                log.warning("%s: %s; disconnecting", conn, e)
                return
            if body is None:
                return
            await asyncio.sleep(0)  # a client with many requests buffered waits its turn like the others
            try:
                request = framing.parse(self.request_type, body)
            except framing.MessageError as e:
                if self.on_malformed is None:
                    log.warning("%s: malformed request (%d bytes): %s; disconnecting", conn, len(body), e)
                    return
                if conn.log_budget.allow("malformed request"):
                    log.warning("%s: malformed request (%d bytes): %s", conn, len(body), e)
                await conn.send(self.on_malformed(body))
                continue
            try:
                await self.handler(request, conn)
            except (ConnectionError, BrokenPipeError, asyncio.CancelledError):
                raise
            except Exception:
                if self.on_handler_error is None:
                    raise
                if conn.log_budget.allow("internal error"):
                    log.exception("%s: internal error handling a request", conn)
                await conn.send(self.on_handler_error(request))
