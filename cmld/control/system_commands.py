"""Device-wide operations: REBOOT_DEVICE, WIPE_DEVICE, and the commands this cmld does not offer."""

from __future__ import annotations

import asyncio
import logging
import shutil

from cml_common.messages.control_pb2 import ControllerToDaemon
from cml_common.messages.control_pb2 import DaemonToController as D
from cmld.control.family import CommandFamily
from cmld.control.replies import response
from cmld.control.server import ControlConnection
from cmld.device import logs as log_export
from cmld.device.power import HOST_POWEROFF, systemd_is_init

log = logging.getLogger(__name__)


class SystemCommands(CommandFamily):
    async def reboot_device(self, req: ControllerToDaemon, conn: ControlConnection) -> None:
        """As the original: CMD_OK at once, then every container is stopped (c0 first) and, on a
        device, the device reboots through systemd (cmld exits where systemd is not init). In
        hosted mode the host is never rebooted: stopping the containers is all."""
        await conn.send(response(D.CMD_OK))
        rt = self.cmld.runtime
        log.warning("%s: REBOOT_DEVICE: stopping every container%s", conn,
                    "" if self.cmld.hosted else ", then rebooting the device")
        if rt is not None:
            await rt.reboot_device()

    async def wipe_device(self, req: ControllerToDaemon, conn: ControlConnection) -> None:
        st = self.cmld
        if any(c.is_active for c in st.containers.all()):
            log.error("%s: WIPE_DEVICE refused: containers are still active", conn)
            await conn.send(response(D.CMD_FAILED))
            return

        def wipe() -> None:
            for d in (st.layout.guestos, st.layout.containers, st.layout.keys, st.layout.tokens):
                shutil.rmtree(d, ignore_errors=True)
            keep = log_export.current_files(st.log_dir)
            for p in log_export.log_files(st.log_dir):
                if p.name not in keep:
                    p.unlink(missing_ok=True)
            for d in (st.layout.containers, st.layout.keys):
                d.mkdir(parents=True, exist_ok=True, mode=0o700)

        await asyncio.to_thread(wipe)
        st.containers.forget_all()
        st.guestos.clear()
        log.warning("%s: device wiped (GuestOSes, containers, keys, tokens, old logs)", conn)
        await conn.send(response(D.CMD_OK))
        if not st.hosted and systemd_is_init():
            await asyncio.create_subprocess_exec(*HOST_POWEROFF)

    async def unsupported(self, req: ControllerToDaemon, conn: ControlConnection) -> None:
        log.warning("%s: %s is not supported by this cmld", conn, ControllerToDaemon.Command.Name(req.command))
        await conn.send(response(D.CMD_UNSUPPORTED))
