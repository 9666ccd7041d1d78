"""The in-container service channel (the original's c_service): `/run/socket/cml-service`.

The child binds the socket inside the container and hands the listening fd to cmld. A service
reports BOOT_COMPLETED (BOOTING -> RUNNING), asks for the hostname and DNS server, and receives
SHUTDOWN when the container is stopped. Unsolicited messages go to the first connected client.

`cservice init` closes its connection right after BOOT_COMPLETED and execs the guest's init, so a
stop that comes in that instant may hand SHUTDOWN to a connection that is about to close: when
the client that got SHUTDOWN goes away and the container is still up a moment later, the stop
goes on with the next way (`halt` in the container) instead of waiting for the kill timer.

The socket is the container's to abuse, so the work one container can cause is bounded: frames of
at most 64 KiB, at most `FRAME_RATE` frames a second (more wait), the event loop given back after
every frame (so the control socket and other containers are served in between), a connection
closed after `MAX_BAD_FRAMES` malformed frames, and every log line about it within the
container's log budget (kind 'service').
"""

from __future__ import annotations

import asyncio
import logging
import socket
import time
from collections.abc import Awaitable, Callable

from cml_common.aioframing import read_frame, write_frame
from cml_common.framing import FramingError, MessageError, parse, serialize
from cml_common.logsafe import clip
from cml_common.messages.c_service_pb2 import CmldToServiceMessage, ServiceToCmldMessage
from cml_common.messages.container_pb2 import ContainerState
from cmld.audit.auditor import Auditor
from cmld.modules.base import Module
from cmld.modules.context import StartContext

log = logging.getLogger(__name__)
MAX_CLIENTS = 8
MAX_SERVICE_FRAME = 64 << 10  # the largest message a service sends is an AUDIT_ACK (a hex SHA-512)
MAX_BAD_FRAMES = 8  # malformed frames on one connection before it is closed
FRAME_RATE = 100.0  # frames per second one container's service connections may send, over a burst
FRAME_BURST = 200
S2C = ServiceToCmldMessage
C2S = CmldToServiceMessage
SHUTDOWN_LOST_GRACE = 1.0  # s: a service that got SHUTDOWN and left, and the container still up


class ServiceModule(Module):
    name = "service"

    def __init__(self, on_boot_completed: Callable[[], None], host_dns: str,
                 on_shutdown_lost: Callable[[Module], Awaitable[None]] | None = None,
                 audit: Auditor | None = None) -> None:
        self.on_boot_completed = on_boot_completed
        self.audit = audit
        self.host_dns = host_dns
        self.on_shutdown_lost = on_shutdown_lost
        self.server: asyncio.AbstractServer | None = None
        self.clients: list[asyncio.StreamWriter] = []
        self.ctx: StartContext | None = None
        self.shutdown_target: asyncio.StreamWriter | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._frame_tokens = float(FRAME_BURST)
        self._frame_time = 0.0

    def _note(self, ctx: StartContext, level: int, fmt: str, *args: object) -> None:
        """A log line about the container's service, within its log budget."""
        if ctx.log_budget.allow("service"):
            log.log(level, "container %s: " + fmt, ctx.container.name, *args)

    async def _pace(self) -> None:
        """Give the loop back after each frame, and wait while the container is over its frame rate."""
        now = time.monotonic()
        self._frame_tokens = min(float(FRAME_BURST), self._frame_tokens + (now - self._frame_time) * FRAME_RATE)
        self._frame_time = now
        self._frame_tokens -= 1.0
        await asyncio.sleep(0.0 if self._frame_tokens >= 0 else -self._frame_tokens / FRAME_RATE)

    async def prepare(self, ctx: StartContext) -> None:
        ctx.spec.service_socket = True

    async def pre_exec(self, ctx: StartContext) -> None:
        fd = ctx.take_fd("service")
        if fd is None:
            return
        self.ctx = ctx
        sock = socket.socket(fileno=fd)
        self.server = await asyncio.start_unix_server(self._serve, sock=sock)
        if self.audit is not None:
            self.audit.attach(ctx.container.uuid, self._send_unsolicited)

    async def _send_unsolicited(self, body: bytes) -> None:
        """To the first connected client (the original), e.g. AUDIT_NOTIFY."""
        if not self.clients:
            return
        await write_frame(self.clients[0], body)

    def connected(self) -> bool:
        return bool(self.clients)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        ctx = self.ctx
        if ctx is None or len(self.clients) >= MAX_CLIENTS:
            writer.close()
            return
        self.clients.append(writer)
        bad = 0
        try:
            while True:
                body = await read_frame(reader, max_size=MAX_SERVICE_FRAME, frame_timeout=10)
                if body is None:
                    break
                await self._pace()
                try:
                    msg = parse(S2C, body)
                except MessageError as e:
                    bad += 1
                    if bad >= MAX_BAD_FRAMES:
                        self._note(ctx, logging.WARNING, "service sent %d malformed messages (last: %s); "
                                   "connection closed", bad, clip(str(e)))
                        break
                    self._note(ctx, logging.WARNING, "service sent a malformed message: %s", clip(str(e)))
                    continue
                await self._handle(ctx, msg, writer)
        except (FramingError, ConnectionError) as e:
            self._note(ctx, logging.WARNING, "service connection: %s", clip(str(e)))
        finally:
            if writer in self.clients:
                self.clients.remove(writer)
            writer.close()
            if writer is self.shutdown_target:
                self.shutdown_target = None
                task = asyncio.ensure_future(self._shutdown_lost(ctx))
                self._tasks.add(task)
                task.add_done_callback(self._tasks.discard)

    async def _shutdown_lost(self, ctx: StartContext) -> None:
        await asyncio.sleep(SHUTDOWN_LOST_GRACE)
        if self.ctx is not ctx or ctx.container.state != ContainerState.SHUTDOWN or self.on_shutdown_lost is None:
            return
        log.info("container %s: the service closed its connection after SHUTDOWN and the container is still up; "
                 "going on with the next way to stop it", ctx.container.name)
        await self.on_shutdown_lost(self)

    async def _handle(self, ctx: StartContext, msg: ServiceToCmldMessage, writer: asyncio.StreamWriter) -> None:
        cfg = ctx.container.config
        if msg.code == S2C.BOOT_COMPLETED:
            if ctx.container.state == ContainerState.BOOTING:
                log.info("container %s: service reports boot completed", cfg.name)
            self.on_boot_completed()
        elif msg.code == S2C.CONTAINER_CFG_NAME_REQ:
            await write_frame(writer, serialize(C2S(code=C2S.CONTAINER_CFG_NAME, container_cfg_name=cfg.name)))
        elif msg.code == S2C.CONTAINER_CFG_DNS_REQ:
            dns = cfg.dns_server or self.host_dns
            await write_frame(writer, serialize(C2S(code=C2S.CONTAINER_CFG_DNS, container_cfg_dns=dns)))
        elif msg.code == S2C.AUDIT_ACK:
            if self.audit is None:
                log.debug("container %s: service AUDIT_ACK; auditing is off (audit_size 0)", cfg.name)
                return

            async def reply(body: bytes) -> None:
                await write_frame(writer, body)
            await self.audit.on_ack(ctx.container.uuid, msg.audit_ack, reply)
        else:
            self._note(ctx, logging.INFO, "service message %s not handled", S2C.Code.Name(msg.code))

    async def stop(self, ctx: StartContext) -> bool:
        if not self.clients:
            return False
        try:
            await write_frame(self.clients[0], serialize(C2S(code=C2S.SHUTDOWN)))
        except (ConnectionError, OSError) as e:
            log.info("container %s: SHUTDOWN not delivered: %s", ctx.container.name, e)
            return False
        self.shutdown_target = self.clients[0]
        log.info("container %s: SHUTDOWN sent to the service", ctx.container.name)
        return True

    async def cleanup(self, ctx: StartContext, rebooting: bool) -> None:
        if self.audit is not None:
            self.audit.detach(ctx.container.uuid)
        for task in list(self._tasks):
            task.cancel()
        self.shutdown_target = None
        for w in self.clients:
            w.close()
        self.clients.clear()
        if self.server is not None:
            self.server.close()
            self.server = None
        self.ctx = None
