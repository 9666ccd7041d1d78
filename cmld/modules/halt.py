"""Stop without a service: run `halt` in the container (as the original), else kill."""

from __future__ import annotations

import asyncio
import logging

from cmld.modules.base import Module
from cmld.modules.context import StartContext
from cmld.modules.exec_session import ExecSession

log = logging.getLogger(__name__)

HALT_WAIT = 5.0


class HaltModule(Module):
    name = "halt"

    async def stop(self, ctx: StartContext) -> bool:
        try:
            session = await ExecSession.in_container(ctx, ["halt"], pty=False)
        except OSError as e:
            log.info("container %s: halt not started: %s", ctx.container.name, e)
            return False
        await session.write_input(b"")

        async def discard(_: bytes) -> None:
            return None
        try:
            reason = await asyncio.wait_for(session.relay(discard), HALT_WAIT)
        except TimeoutError:
            log.warning("container %s: halt in the container did not end within %g s; its session is killed",
                        ctx.container.name, HALT_WAIT)
            session.kill()
            return False
        log.info("container %s: halt in the container: %s", ctx.container.name, reason)
        return reason == "exit 0"
