"""GuestOS installation and trust anchors: PUSH_GUESTOS_CONFIG, REMOVE_GUESTOS, REGISTER_NEWCA and
REGISTER_LOCALCA."""

from __future__ import annotations

import asyncio
import logging

from cml_common.messages.container_pb2 import ContainerTrust
from cml_common.messages.control_pb2 import ControllerToDaemon
from cml_common.messages.control_pb2 import DaemonToController as D
from cmld.control.family import CommandFamily
from cmld.control.replies import response
from cmld.control.server import ControlConnection
from cmld.errors import CAError, InstallError
from cmld.guestos.ca_store import register_ca, register_local_ca

log = logging.getLogger(__name__)


class GuestOSCommands(CommandFamily):
    async def push_guestos_config(self, req: ControllerToDaemon, conn: ControlConnection) -> None:
        """Verify, then INSTALL_STARTED, the images fetched and checked, then INSTALL_COMPLETED (or
        INSTALL_FAILED with the reason): several replies on one connection, as the original."""
        st = self.cmld
        installer = st.installer
        raw, sig, cert = req.guestos_config_file, req.guestos_config_signature, req.guestos_config_certificate
        try:
            cfg, trust = await installer.check(raw, sig, cert, st.trust_policy(), unprivileged=not conn.privileged)
        except InstallError as e:
            log.warning("%s: PUSH_GUESTOS_CONFIG refused: %s", conn, e)
            await conn.send(response(D.GUESTOS_MGR_INSTALL_FAILED, str(e)))
            return
        log.info("%s: GuestOS %s-%d accepted (%s); fetching its images", conn, cfg.name, cfg.version,
                 ContainerTrust.Name(trust))
        await conn.send(response(D.GUESTOS_MGR_INSTALL_STARTED))
        try:
            await installer.install(raw, sig, cert, cfg, trust, st.device.update_base_url, conn.caller_root)
        except (InstallError, OSError) as e:
            log.error("%s: GuestOS %s-%d not installed: %s", conn, cfg.name, cfg.version, e)
            await conn.send(response(D.GUESTOS_MGR_INSTALL_FAILED, str(e)))
            return
        log.info("%s: GuestOS %s-%d installed", conn, cfg.name, cfg.version)
        await conn.send(response(D.GUESTOS_MGR_INSTALL_COMPLETED))

    async def remove_guestos(self, req: ControllerToDaemon, conn: ControlConnection) -> None:
        name = req.guestos_name
        st = self.cmld
        if not name:
            log.warning("%s: REMOVE_GUESTOS without guestos_name", conn)
            await conn.send(response(D.CMD_FAILED))
            return
        if st.guestos.latest(name) is None:
            log.warning("%s: REMOVE_GUESTOS: no GuestOS named %r", conn, name)
            await conn.send(response(D.CMD_FAILED))
            return
        if st.containers.uses_guestos(name) or (name == st.device.c0os and not st.hosted):
            log.warning("%s: REMOVE_GUESTOS: %r is in use; not removed", conn, name)
            await conn.send(response(D.CMD_FAILED))
            return
        gos = await asyncio.to_thread(st.guestos.remove_latest, name)
        log.info("%s: removed GuestOS %s version %d", conn, gos.name, gos.version)
        await conn.send(response(D.CMD_OK))

    async def register_newca(self, req: ControllerToDaemon, conn: ControlConnection) -> None:
        try:
            path, added = register_ca(self.cmld.layout.ca_dir, req.guestos_rootcert)
        except (CAError, OSError) as e:
            log.warning("%s: REGISTER_NEWCA refused: %s", conn, e)
            await conn.send(response(D.GUESTOS_MGR_REGISTER_CA_ERROR))
            return
        log.info("%s: CA %s %s", conn, path.name, "registered" if added else "was already registered")
        await conn.send(response(D.GUESTOS_MGR_REGISTER_CA_OK))

    async def register_localca(self, req: ControllerToDaemon, conn: ControlConnection) -> None:
        # The original never replies to this; every request gets a reply here.
        try:
            register_local_ca(self.cmld.layout.localca_cert, req.guestos_rootcert)
        except (CAError, OSError) as e:
            log.warning("%s: REGISTER_LOCALCA refused: %s", conn, e)
            await conn.send(response(D.GUESTOS_MGR_REGISTER_CA_ERROR))
            return
        log.info("%s: local CA registered", conn)
        await conn.send(response(D.GUESTOS_MGR_REGISTER_CA_OK))
