"""CONTAINER_START / STOP / FREEZE / UNFREEZE / WIPE and REMOVE_CONTAINER.

The compartment checks its own preconditions and raises the original's reply code; this layer
adds what belongs to the control API: c0 is not started or stopped through it, the token PIN is
checked (after the start preconditions, so no PIN attempt is spent on a container that cannot
start), and the data of a removed or wiped container goes only once it is stopped.
"""

from __future__ import annotations

import asyncio
import logging

from cml_common.crashpoints import crash_point
from cml_common.messages.container_pb2 import ContainerState
from cml_common.messages.control_pb2 import ControllerToDaemon
from cml_common.messages.control_pb2 import DaemonToController as D
from cmld.containers.container import Container
from cmld.control.family import CommandFamily, state_name
from cmld.control.replies import response
from cmld.control.server import ControlConnection
from cmld.errors import CmldError, TokenFailure

log = logging.getLogger(__name__)
# How long remove and wipe wait for a killed container to be gone (a start in progress first
# runs to its end; then SIGKILL ends the PID namespace at once).
TERMINATE_TIMEOUT = 30.0


class LifecycleCommands(CommandFamily):
    async def start(self, req: ControllerToDaemon, conn: ControlConnection) -> None:
        c = self.target(req, conn)
        self.refuse_c0(c)
        comp = self.runtime(D.CONTAINER_START_EINTERNAL).compartment(c)
        comp.check_startable()
        setup = req.HasField("container_start_params") and req.container_start_params.setup
        try:
            key = await self._container_key(req, c)
        except TokenFailure as e:
            if e.corrupt:
                comp.set_state(ContainerState.ZOMBIE)
            raise
        await comp.start(setup=setup, key=key)
        log.info("%s: started %s", conn, c.name)
        await conn.send(response(D.CONTAINER_START_OK))

    async def _container_key(self, req: ControllerToDaemon, c: Container) -> bytearray | None:
        """The unwrapped key of a container with a token (None without one): the PIN comes in the
        start parameters; a PIN pad (usb_pin_entry) is not supported by this cmld."""
        keys = self.cmld.keys
        if not keys.has_token(c):
            return None
        if c.config.usb_pin_entry:
            raise TokenFailure(D.CONTAINER_USB_PIN_ENTRY_FAIL, "PIN entry on a USB PIN pad is not supported "
                                                               "by this cmld")
        if not req.HasField("container_start_params"):
            raise TokenFailure(D.CONTAINER_START_PASSWD_WRONG, f"{c.name} has a token: its PIN is needed")
        return await keys.container_key(c, req.container_start_params.key)

    async def stop(self, req: ControllerToDaemon, conn: ControlConnection) -> None:
        c = self.target(req, conn)
        self.refuse_c0(c)
        comp = self.runtime(D.CONTAINER_STOP_FAILED_NOT_RUNNING).compartment(c)
        comp.check_stoppable()
        if self.cmld.keys.has_token(c) and req.HasField("container_start_params"):
            await self.cmld.keys.authorize_stop(c, req.container_start_params.key)
        await comp.stop()
        log.info("%s: stopping %s", conn, c.name)
        await conn.send(response(D.CONTAINER_STOP_OK))

    async def freeze(self, req: ControllerToDaemon, conn: ControlConnection) -> None:
        comp = self.runtime().compartment(self.target(req, conn))
        if not await comp.freeze():
            raise CmldError("not frozen in time")
        await conn.send(response(D.CMD_OK))

    async def unfreeze(self, req: ControllerToDaemon, conn: ControlConnection) -> None:
        comp = self.runtime().compartment(self.target(req, conn))
        if not await comp.unfreeze():
            raise CmldError("the container's cgroup is gone")
        await conn.send(response(D.CMD_OK))

    async def _terminate(self, c: Container, conn: ControlConnection, what: str) -> None:
        """Kill an active container before its data goes (remove, wipe), as the original does."""
        if not c.is_active:
            return
        log.info("%s: %s: %s is %s; killing it first", conn, what, c.name, state_name(c))
        if not await self.runtime().compartment(c).terminate(TERMINATE_TIMEOUT):
            raise CmldError("container did not stop")

    async def remove(self, req: ControllerToDaemon, conn: ControlConnection) -> None:
        c = self.target(req, conn)
        if c.is_c0:
            raise CmldError("c0 cannot be removed")
        await self._terminate(c, conn, "REMOVE_CONTAINER")
        try:
            await self.cmld.keys.remove_token(c)
            await asyncio.to_thread(self.cmld.containers.remove, c)
        except OSError as e:
            raise CmldError(f"removing {c.uuid}: {e}") from e
        if self.cmld.runtime is not None:
            self.cmld.runtime.forget(c.uuid)
        crash_point("remove.done")
        log.info("%s: removed container %s (%s)", conn, c.uuid, c.name)
        await conn.send(response(D.CMD_OK))

    async def wipe(self, req: ControllerToDaemon, conn: ControlConnection) -> None:
        """Deletes the key and every image of the container; a running container is killed
        first (as the original); a ZOMBIE becomes STOPPED."""
        c = self.target(req, conn)
        await self._terminate(c, conn, "CONTAINER_WIPE")
        try:
            removed = await asyncio.to_thread(self.cmld.containers.wipe, c)
        except OSError as e:
            raise CmldError(str(e)) from e
        crash_point("wipe.done")
        if c.state == ContainerState.ZOMBIE:
            self.runtime().compartment(c).set_state(ContainerState.STOPPED)
        log.info("%s: wiped %s: %d file(s) removed", conn, c.uuid, len(removed))
        await conn.send(response(D.CMD_OK))
