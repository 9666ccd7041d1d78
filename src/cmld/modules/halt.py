"""Stop without a service: run `halt` in the container (as the original), else kill."""

from __future__ import annotations

import asyncio
import logging

from ..runtime.context import StartContext
from ..runtime.exec_session import ExecSession
from .base import Module
from .seccomp import session_supervisor

log = logging.getLogger(__name__)

HALT_WAIT = 5.0


class HaltModule(Module):
    name = "halt"

    async def stop(self, ctx: StartContext) -> bool:
        try:
            session = await ExecSession.start(init_pid=ctx.init_pid, cgroup_procs=ctx.spec.cgroup_procs,
                                              userns=ctx.spec.uid_start is not None, cap_drop=ctx.spec.cap_drop,
                                              argv=["halt"], pty=False,
                                              supervise=session_supervisor(ctx))
        except OSError as e:
            log.info("container %s: halt not started: %s", ctx.container.name, e)
            return False
        await session.write_input(b"")

        async def discard(_: bytes) -> None:
            return None
        try:
            reason = await asyncio.wait_for(session.relay(discard), HALT_WAIT)
        except TimeoutError:
            session.kill()
            return False
        log.info("container %s: halt in the container: %s", ctx.container.name, reason)
        return reason == "exit 0"
