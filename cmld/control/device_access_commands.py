"""Per-container device commands: CONTAINER_DEV_ACCESS at runtime, and those whose machinery
comes with later issues (audio, snapshot, switch), which answer CMD_UNSUPPORTED rather than a
success they did not earn (the original answers CMD_OK). Interfaces: `iface_commands.py`."""

from __future__ import annotations

import logging
import re

from cml_common.messages.control_pb2 import ControllerToDaemon as C
from cml_common.messages.control_pb2 import DaemonToController as D
from cmld.control.family import CommandFamily, state_name
from cmld.control.replies import response
from cmld.control.server import ControlConnection
from cmld.errors import CmldError, StateError
from cmld.modules.devices import DevicesModule
from cmld.runtime.transitions import EXEC_STATES

log = logging.getLogger(__name__)
DEV_RULE = re.compile(r"^[abc] (\*|\d+):(\*|\d+) [rwm]{1,3}$")


class DeviceAccessCommands(CommandFamily):
    async def dev_access(self, req: C, conn: ControlConnection) -> None:
        c = self.target(req, conn)
        if not DEV_RULE.match(req.dev_rule):
            raise CmldError(f"malformed device rule {req.dev_rule!r} (want e.g. 'c 4:1 rwm')")
        comp = self.runtime().compartment(c)
        devices = comp.module(DevicesModule)
        if comp.state not in EXEC_STATES or comp.ctx is None or not isinstance(devices, DevicesModule):
            raise StateError(f"container is {state_name(c)}")
        try:
            done = devices.dev_access(comp.ctx, req.dev_rule)
        except (ValueError, OSError) as e:
            raise StateError(str(e)) from None
        log.info("%s: container %s: device %s %s", conn, c.name, req.dev_rule, done)
        await conn.send(response(D.CMD_OK))

    async def not_yet(self, req: C, conn: ControlConnection) -> None:
        """Known container, machinery not in this build (audio, snapshot, switch)."""
        self.target(req, conn)
        log.warning("%s: %s is not supported by this cmld", conn, C.Command.Name(req.command))
        await conn.send(response(D.CMD_UNSUPPORTED))
