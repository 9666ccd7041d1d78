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
        """As the original: operatingsystems/, containers/, keys/, tokens/ and the old logs are
        deleted, CMD_OK is sent once that is done, and a device goes down (power off) the way it
        does when c0 stops: c0 first, then the others, then systemd powers off (or cmld exits, per
        --c0-down). On a device c0 runs while its files go, as in the original. In hosted mode
        nothing goes down, so the running containers are stopped before their files go."""
        st = self.cmld
        rt = st.runtime
        if st.hosted and rt is not None:
            await rt.stop_all()
            if any(c.is_active for c in st.containers.all()):
                log.error("%s: WIPE_DEVICE refused: containers did not stop", conn)
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
        st.guestos.clear()
        log.warning("%s: device wiped (GuestOSes, containers, keys, tokens, old logs)", conn)
        await conn.send(response(D.CMD_OK))
        if st.hosted or rt is None:
            st.containers.forget_all()
            return
        rt.device_reboot = False
        c0 = [comp for comp in rt.compartments.values() if comp.container.is_c0 and comp.container.is_active]
        log.warning("WIPE_DEVICE: the device goes down")
        if c0:
            await rt.stop_all(only=c0)  # c0 down: the others are stopped, then the device goes down
        else:
            await rt.stop_all()
            if rt.on_c0_down is not None:
                await rt.on_c0_down()

    async def unsupported(self, req: ControllerToDaemon, conn: ControlConnection) -> None:
        log.warning("%s: %s is not supported by this cmld", conn, ControllerToDaemon.Command.Name(req.command))
        await conn.send(response(D.CMD_UNSUPPORTED))
