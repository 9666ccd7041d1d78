"""c0's privileged control socket: `/run/socket/cml-control` inside the management container.

As in the original, c0 is where operators run `control`: the launcher binds the socket inside c0
(so the file belongs to c0's root and nobody outside c0 can reach it by path) and hands the
listening fd to cmld, which serves it like its own control socket, with full privileges. The
server goes away with c0: a stopped c0 leaves no listener behind.
"""

from __future__ import annotations

import logging
import socket
from collections.abc import Awaitable, Callable
from typing import Protocol

from ..runtime.context import StartContext
from .base import Module

log = logging.getLogger(__name__)


class Closable(Protocol):
    async def close(self) -> None: ...


# (listening socket, c0's init pid) -> the server serving it
ServeControl = Callable[[socket.socket, int], Awaitable[Closable]]


class ControlSocketModule(Module):
    name = "control_socket"

    def __init__(self, serve: ServeControl) -> None:
        self.serve = serve
        self.server: Closable | None = None

    async def prepare(self, ctx: StartContext) -> None:
        ctx.spec.control_socket = True

    async def pre_exec(self, ctx: StartContext) -> None:
        fd = ctx.take_fd("control")
        if fd is None:
            return
        self.server = await self.serve(socket.socket(fileno=fd), ctx.init_pid)
        log.info("container %s: control socket served at /run/socket/cml-control inside", ctx.container.name)

    async def cleanup(self, ctx: StartContext, rebooting: bool) -> None:
        if self.server is not None:
            server, self.server = self.server, None
            await server.close()
