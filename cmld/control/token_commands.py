"""CONTAINER_CHANGE_TOKEN_PIN and CONTAINER_CMLD_HANDLES_PIN: the container's token PIN.

The first PIN change pairs the token with this device (scd PROVISION_PIN), later ones change it;
both carry the device's pairing secret (the original's c_smartcard)."""

from __future__ import annotations

import logging

from cml_common.messages.control_pb2 import ControllerToDaemon
from cml_common.messages.control_pb2 import DaemonToController as D
from cmld.control.family import CommandFamily
from cmld.control.replies import response
from cmld.control.server import ControlConnection
from cmld.errors import CmldError

log = logging.getLogger(__name__)


class TokenCommands(CommandFamily):
    async def change_token_pin(self, req: ControllerToDaemon, conn: ControlConnection) -> None:
        c = self.target(req, conn)
        self.refuse_c0(c)
        if not req.HasField("device_pin") or not req.HasField("device_newpin"):
            raise CmldError("the current and the new PIN are needed", D.CONTAINER_CHANGE_PIN_FAILED)
        if not self.cmld.keys.has_token(c):
            raise CmldError(f"{c.name} has no token", D.CONTAINER_CHANGE_PIN_FAILED)
        paired = await self.cmld.keys.change_pin(c, req.device_pin, req.device_newpin)
        log.info("%s: token PIN of %s %s", conn, c.name,
                 "set; token paired with this device" if paired else "changed")
        await conn.send(response(D.CONTAINER_CHANGE_PIN_SUCCESSFUL))

    async def cmld_handles_pin(self, req: ControllerToDaemon, conn: ControlConnection) -> None:
        c = self.target(req, conn)
        await conn.send(D(code=D.CONTAINER_CMLD_HANDLES_PIN, container_cmld_handles_pin=c.config.usb_pin_entry))
