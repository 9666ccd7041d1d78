"""The control socket: framed ControllerToDaemon requests in, DaemonToController replies out.

Each client is served by its own task, requests on one connection in order. A client that
breaks the framing, stalls mid-frame, idles too long or exceeds the limits is disconnected with a
log line; every other client keeps being served. A well-framed request that does not decode still
gets a reply (CMD_FAILED, or CMD_UNSUPPORTED for an unknown command) and the connection stays.
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
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

from google.protobuf import unknown_fields

from cml_common import aioframing, framing
from cml_common.messages.control_pb2 import ControllerToDaemon, DaemonToController

from .replies import response

log = logging.getLogger(__name__)

Handler = Callable[[ControllerToDaemon, "ControlConnection"], Awaitable[None]]
_UCRED = struct.Struct("3i")


@dataclass
class PeerCred:
    pid: int
    uid: int
    gid: int

    def __str__(self) -> str:
        return f"pid={self.pid} uid={self.uid}"


@dataclass
class ControlConnection:
    ident: int
    reader: asyncio.StreamReader
    writer: asyncio.StreamWriter
    peer: PeerCred
    privileged: bool = True
    closed: bool = False
    # The root file system of the client's side: "/" on the host socket, c0's root for the
    # socket inside c0 (relative file:// update URLs are resolved there, as the original).
    caller_root: Path = Path("/")

    def __str__(self) -> str:
        return f"control client #{self.ident} ({self.peer})"

    async def send(self, msg: DaemonToController) -> None:
        """A client that went away does not undo what it asked for (the original's `converter`
        closes right after PUSH_GUESTOS_CONFIG): its replies are dropped, the work goes on."""
        if self.closed:
            return
        body = framing.serialize(msg)
        try:
            await aioframing.write_frame(self.writer, body)
        except (ConnectionError, OSError) as e:
            self.closed = True
            log.info("%s went away before its reply (%s); the request is carried out anyway", self, e)


@dataclass
class ServerLimits:
    idle_timeout: float = 600.0  # no request for this long: disconnect
    frame_timeout: float = 10.0  # a started frame must complete within this
    max_clients: int = 256
    max_message: int = framing.MAX_MESSAGE_SIZE


def _peer_cred(sock: socket.socket | None) -> PeerCred:
    if sock is None:
        return PeerCred(-1, -1, -1)
    try:
        raw = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, _UCRED.size)
        return PeerCred(*_UCRED.unpack(raw))
    except OSError:
        return PeerCred(-1, -1, -1)


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


class ControlServer:
    def __init__(self, path: Path | None, handler: Handler, *, limits: ServerLimits | None = None,
                 mode: int = 0o600, gid: int | None = None, privileged: bool = True,
                 on_close: Callable[[ControlConnection], None] | None = None,
                 caller_root: Path = Path("/")) -> None:
        self.path: Path | None = path
        self.caller_root = caller_root
        self.handler = handler
        self.on_close = on_close
        self.limits = limits or ServerLimits()
        self.mode = mode
        self.gid = gid
        self.privileged = privileged
        self.clients: dict[int, ControlConnection] = {}
        self._ids = itertools.count(1)
        self._server: asyncio.Server | None = None

    async def start_on(self, sock: socket.socket) -> None:
        """Serve a listening socket made elsewhere (c0's, bound inside c0 by the launcher); its
        file is not ours to chmod or remove."""
        self.path = None
        self._server = await asyncio.start_unix_server(self._serve, sock=sock)

    async def start(self) -> None:
        assert self.path is not None
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._remove_stale_socket()
        self._server = await asyncio.start_unix_server(self._serve, path=str(self.path))
        if self.gid is not None:
            os.chown(self.path, -1, self.gid)
        os.chmod(self.path, self.mode)
        log.info("control socket listening on %s", self.path)

    def _remove_stale_socket(self) -> None:
        assert self.path is not None
        try:
            st = self.path.lstat()
        except FileNotFoundError:
            return
        if not stat.S_ISSOCK(st.st_mode):
            raise RuntimeError(f"{self.path} exists and is not a socket; refusing to replace it")
        probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            probe.settimeout(1.0)
            probe.connect(str(self.path))
        except OSError:
            self.path.unlink()  # nobody listens: a leftover of a crashed daemon
            return
        finally:
            probe.close()
        raise RuntimeError(f"another daemon is already listening on {self.path}")

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            for conn in list(self.clients.values()):
                conn.writer.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._server.wait_closed(), 2)
            self._server = None
        if self.path is not None:
            with contextlib.suppress(FileNotFoundError):
                self.path.unlink()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        peer = _peer_cred(writer.get_extra_info("socket"))
        conn = ControlConnection(next(self._ids), reader, writer, peer, self.privileged,
                                 caller_root=self.caller_root)
        if len(self.clients) >= self.limits.max_clients:
            log.warning("refusing %s: %d clients already connected", conn, len(self.clients))
            writer.close()
            return
        self.clients[conn.ident] = conn
        log.debug("%s connected", conn)
        try:
            await self._loop(conn)
        except (ConnectionError, BrokenPipeError) as e:
            log.info("%s went away: %s", conn, e)
        except Exception:
            log.exception("%s: internal error; connection closed", conn)
        finally:
            conn.closed = True
            del self.clients[conn.ident]
            if self.on_close is not None:
                self.on_close(conn)
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()
            log.debug("%s disconnected", conn)

    async def _loop(self, conn: ControlConnection) -> None:
        lim = self.limits
        while True:
            try:
                body = await aioframing.read_frame(
                    conn.reader,
                    idle_timeout=lim.idle_timeout,
                    frame_timeout=lim.frame_timeout,
                    max_size=lim.max_message,
                )
            except framing.FramingError as e:
                log.warning("%s: %s; disconnecting", conn, e)
                return
            if body is None:
                return
            try:
                request = framing.parse(ControllerToDaemon, body)
            except framing.MessageError as e:
                value = unknown_command_value(body)
                if value is not None:
                    log.warning("%s: unknown command value %d; replying CMD_UNSUPPORTED", conn, value)
                    await conn.send(response(DaemonToController.CMD_UNSUPPORTED))
                else:
                    log.warning("%s: malformed request (%d bytes): %s; replying CMD_FAILED", conn, len(body), e)
                    await conn.send(response(DaemonToController.CMD_FAILED))
                continue
            try:
                await self.handler(request, conn)
            except (ConnectionError, BrokenPipeError):
                raise
            except Exception:
                log.exception("%s: %s failed with an internal error",
                              conn, ControllerToDaemon.Command.Name(request.command))
                await conn.send(response(DaemonToController.CMD_FAILED))
