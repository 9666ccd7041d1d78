"""The control socket inside a container: `/run/socket/cml-control`.

c0 (privileged): as in the original, c0 is where operators run `control`; its socket is served
like cmld's own, with full privileges.

A container whose GuestOS has `feature_install_guest` (unprivileged): the original maps the
control socket into such containers (`cmld_container_register_observers`) so a converter or
installer inside can list and push GuestOSes; that socket answers only LIST_GUESTOS_CONFIGS,
PUSH_GUESTOS_CONFIG and REGISTER_LOCALCA, everything else with CMD_UNSUPPORTED
(`control/access.py`).

Either way the launcher binds the socket inside the container (so the file belongs to its root
and nobody outside it can reach it by path) and hands the listening fd to cmld. The server goes
away with the container: a stopped container leaves no listener behind.
"""

from __future__ import annotations

import logging
import socket
from collections.abc import Awaitable, Callable
from typing import Protocol

from cmld.modules.base import Module
from cmld.modules.context import StartContext

log = logging.getLogger(__name__)


class Closable(Protocol):
    async def close(self) -> None: ...


# (listening socket, the container's init pid, privileged) -> the server serving it
ServeControl = Callable[[socket.socket, int, bool], Awaitable[Closable]]


def wants_control_socket(ctx: StartContext) -> bool:
    return ctx.container.is_c0 or bool(ctx.guestos is not None and ctx.guestos.feature_install_guest)


class ControlSocketModule(Module):
    name = "control_socket"

    def __init__(self, serve: ServeControl) -> None:
        self.serve = serve
        self.server: Closable | None = None

    async def prepare(self, ctx: StartContext) -> None:
        ctx.spec.control_socket = wants_control_socket(ctx)

    async def pre_exec(self, ctx: StartContext) -> None:
        fd = ctx.take_fd("control")
        if fd is None:
            return
        privileged = ctx.container.is_c0
        self.server = await self.serve(socket.socket(fileno=fd), ctx.init_pid, privileged)
        log.info("container %s: %s control socket served at /run/socket/cml-control inside", ctx.container.name,
                 "privileged" if privileged else "unprivileged (feature_install_guest)")

    async def cleanup(self, ctx: StartContext, rebooting: bool) -> None:
        if self.server is not None:
            server, self.server = self.server, None
            await server.close()
