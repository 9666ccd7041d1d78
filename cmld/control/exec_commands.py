"""CONTAINER_EXEC_CMD and CONTAINER_EXEC_INPUT: a command run in a container, streamed back.

A session is bound to its control connection (as the original); EXEC_END always ends it, with
the reason why a command could not start."""

from __future__ import annotations

import asyncio
import logging

from cml_common.logsafe import clip
from cml_common.messages.control_pb2 import ControllerToDaemon
from cml_common.messages.control_pb2 import DaemonToController as D
from cmld.control.family import CommandFamily, state_name
from cmld.control.replies import exec_end
from cmld.control.server import ControlConnection
from cmld.daemon import Cmld
from cmld.errors import CmldError
from cmld.modules.exec_session import ExecSession
from cmld.runtime.transitions import EXEC_STATES

log = logging.getLogger(__name__)


class ExecCommands(CommandFamily):
    def __init__(self, cmld: Cmld) -> None:
        super().__init__(cmld)
        self.sessions: dict[int, ExecSession] = {}
        self._tasks: set[asyncio.Task[None]] = set()

    async def exec_cmd(self, req: ControllerToDaemon, conn: ControlConnection) -> None:
        try:
            c = self.target(req, conn)
            comp = self.runtime().compartment(c)
        except CmldError as e:
            log.warning("%s: EXEC_CMD: %s", conn, e)
            await conn.send(exec_end("no such container" if "no container" in str(e) else str(e)))
            return
        ctx = comp.ctx
        if not req.exec_args:
            log.warning("%s: EXEC_CMD without exec_args", conn)
            await conn.send(exec_end("no command given"))
            return
        if c.state not in EXEC_STATES or ctx is None or ctx.init_pid <= 0:
            await conn.send(exec_end(f"container is not running (state {state_name(c)})"))
            return
        if conn.ident in self.sessions:
            await conn.send(exec_end("this connection already runs a command"))
            return
        try:
            session = await ExecSession.in_container(ctx, list(req.exec_args), req.exec_pty)
        except OSError as e:
            await conn.send(exec_end(f"cannot start the command: {e}"))
            return
        if comp.log_budget.allow("exec"):
            log.info("%s: exec in %s: %s (pty %s)", conn, c.name, clip(" ".join(req.exec_args)), req.exec_pty)
        self.sessions[conn.ident] = session

        async def output(chunk: bytes) -> None:
            await conn.send(D(code=D.EXEC_OUTPUT, exec_output=chunk))

        async def relay() -> None:
            try:
                reason = await session.relay(output)
                await conn.send(exec_end(reason))
            except (ConnectionError, OSError) as e:
                log.info("%s: exec session ended: %s", conn, e)
                session.kill()
            finally:
                self.sessions.pop(conn.ident, None)

        task = asyncio.ensure_future(relay())
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def exec_input(self, req: ControllerToDaemon, conn: ControlConnection) -> None:
        session = self.sessions.get(conn.ident)
        if session is None:
            raise CmldError("no command runs on this connection")
        await session.write_input(req.exec_input.encode())

    def connection_closed(self, conn: ControlConnection) -> None:
        session = self.sessions.pop(conn.ident, None)
        if session is not None:
            session.kill()
