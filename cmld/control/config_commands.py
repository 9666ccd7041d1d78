"""CREATE_CONTAINER, CONTAINER_UPDATE_CONFIG, RELOAD_CONTAINERS: container configs in and out.

A refused config gets the original's answer, an empty CONTAINER_CONFIG, and the reason in the log
and in `error_message`; nothing is written for it. A running container keeps its config until it
stops (the original's out-of-sync state)."""

from __future__ import annotations

import asyncio
import logging

from cml_common.messages.container_pb2 import ContainerConfig, ContainerState
from cml_common.messages.control_pb2 import ControllerToDaemon
from cml_common.messages.control_pb2 import DaemonToController as D
from cml_common.textconfig import ConfigError
from cmld.clients.scd import PAIRED_MARKER
from cmld.containers import disk_space
from cmld.containers.config_trust import trusted_config
from cmld.containers.container import Container
from cmld.containers.store import parse_container_config
from cmld.containers.token_change import token_changed
from cmld.control.family import CommandFamily
from cmld.control.lifecycle_commands import TERMINATE_TIMEOUT
from cmld.control.replies import container_configs, response
from cmld.control.server import ControlConnection
from cmld.errors import CmldError, TokenFailure
from cmld.guestos.select import GuestOSUnavailable, for_container

log = logging.getLogger(__name__)


class ConfigCommands(CommandFamily):
    async def _verified(self, req: ControllerToDaemon, conn: ControlConnection) -> bytes:
        st = self.cmld
        raw = await trusted_config(req.container_config_file, req.container_config_signature,
                                   req.container_config_certificate, signed_configs=st.signed_configs,
                                   provisioned=st.provisioned, scd=st.scd)
        if st.signed_configs:
            log.info("%s: config signature GOOD", conn)
        return raw

    def _sig_and_cert(self, req: ControllerToDaemon) -> tuple[bytes, bytes]:
        """Kept next to the config (`<uuid>.sig`, `<uuid>.cert`) when they were checked."""
        if not self.cmld.signed_configs:
            return b"", b""
        return req.container_config_signature, req.container_config_certificate

    async def _refused(self, conn: ControlConnection, what: str, why: str) -> None:
        log.warning("%s: %s refused: %s", conn, what, why)
        reply = container_configs()
        reply.error_message = why
        await conn.send(reply)

    async def create(self, req: ControllerToDaemon, conn: ControlConnection) -> None:
        st = self.cmld
        try:
            raw = await self._verified(req, conn)
            cfg = parse_container_config(raw, "new container config")
        except (CmldError, ConfigError) as e:
            await self._refused(conn, "CREATE_CONTAINER", str(e))
            return
        if st.containers.name_taken(cfg.name):
            await self._refused(conn, "CREATE_CONTAINER", f"a container named {cfg.name!r} exists")
            return
        try:
            gos = for_container(st.guestos, cfg, st.signed_configs)
        except GuestOSUnavailable as e:
            log.warning("%s: container %r cannot start yet (and its disk space is not checked): %s", conn,
                        cfg.name, e)
        else:
            try:
                await asyncio.to_thread(disk_space.check, st.layout.containers,
                                        disk_space.required_bytes(gos.config, cfg), f"container {cfg.name!r}")
            except (CmldError, OSError) as e:
                await self._refused(conn, "CREATE_CONTAINER", str(e))
                return
        try:
            c = await asyncio.to_thread(st.containers.create, raw, cfg, *self._sig_and_cert(req))
        except OSError as e:
            await self._refused(conn, "CREATE_CONTAINER", f"the config cannot be stored: {e}")
            return
        try:
            await st.keys.add_token(c)
        except TokenFailure as e:
            # The container exists; its token is made again at its first start or PIN change.
            log.warning("%s: container %s created, but %s", conn, c.name, e)
        log.info("%s: created container %s (%s)", conn, c.uuid, c.name)
        await conn.send(container_configs([(c.uuid, c.config)]))

    async def update_config(self, req: ControllerToDaemon, conn: ControlConnection) -> None:
        st = self.cmld
        try:
            c = self.target(req, conn)
            raw = await self._verified(req, conn)
            cfg = parse_container_config(raw, f"new config for {c.uuid}")
        except (CmldError, ConfigError) as e:
            await self._refused(conn, "CONTAINER_UPDATE_CONFIG", str(e))
            return
        if st.containers.name_taken(cfg.name, except_uuid=c.uuid):
            await self._refused(conn, "CONTAINER_UPDATE_CONFIG", f"another container is named {cfg.name!r}")
            return
        current = c.pending_config or c.config
        try:
            await asyncio.to_thread(self._check_extra_space, c.config, cfg)
        except (CmldError, OSError) as e:
            await self._refused(conn, "CONTAINER_UPDATE_CONFIG", str(e))
            return
        try:
            await asyncio.to_thread(st.containers.update, c, raw, cfg, *self._sig_and_cert(req))
        except OSError as e:
            await self._refused(conn, "CONTAINER_UPDATE_CONFIG", f"the config cannot be stored: {e}")
            return
        changed = token_changed(current, cfg)
        if changed is not None:
            await self._wipe_for_new_token(c, changed, conn)
        when = "at its next stop" if c.is_active else "now"
        log.info("%s: config of %s updated; applied %s", conn, c.uuid, when)
        await conn.send(container_configs([(c.uuid, cfg)]))

    def _check_extra_space(self, old: ContainerConfig, new: ContainerConfig) -> None:
        """Only what the new config needs on top of the current one must fit (the original)."""
        try:
            gos = for_container(self.cmld.guestos, new, self.cmld.signed_configs).config
        except GuestOSUnavailable:
            return
        extra = disk_space.required_bytes(gos, new) - disk_space.required_bytes(gos, old)
        if extra > 0:
            disk_space.check(self.cmld.layout.containers, extra, f"the new config of {new.name!r}")

    async def _wipe_for_new_token(self, c: Container, why: str, conn: ControlConnection) -> None:
        """Another token cannot unwrap the key of the data: as the original, the container is killed
        if it runs and wiped, and its pairing released (here: with the key file, which the new token
        could not unwrap, and whatever the old token was); a failure leaves it ZOMBIE."""
        log.warning("%s: %s: %s; wiping the container and releasing its pairing", conn, c.name, why)
        comp = self.runtime().compartment(c) if self.cmld.runtime is not None else None
        try:
            if c.is_active and comp is not None and not await comp.terminate(TERMINATE_TIMEOUT):
                raise CmldError("the container did not stop")
            removed = await asyncio.to_thread(self.cmld.containers.wipe, c)
            (self.cmld.keys.container_dir(c) / PAIRED_MARKER).unlink(missing_ok=True)
        except (CmldError, OSError, RuntimeError) as e:
            log.error("%s: wiping %s for its new token failed: %s; it is ZOMBIE until wiped", conn, c.name, e)
            if comp is not None:
                comp.set_state(ContainerState.ZOMBIE)
            return
        if comp is not None and c.state == ContainerState.ZOMBIE:
            comp.set_state(ContainerState.STOPPED)
        log.info("%s: %s wiped for its new token: %d file(s) removed", conn, c.name, len(removed))

    async def reload(self, req: ControllerToDaemon, conn: ControlConnection) -> None:
        try:
            uuids = await asyncio.to_thread(self.cmld.containers.reload)
        except OSError as e:
            raise CmldError(f"reload failed: {e}") from e
        log.info("%s: reloaded %d container config(s)", conn, len(uuids))
        await conn.send(response(D.CMD_OK))
