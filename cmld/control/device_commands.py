"""Global control commands: listings, GuestOS and CA management, provisioning, logs, device."""

from __future__ import annotations

import asyncio
import logging
import shutil
from pathlib import Path

from cml_common.messages.container_pb2 import ContainerTrust
from cml_common.messages.control_pb2 import ControllerToDaemon, DaemonToController, LogMessage

from .. import log_export
from ..ca_store import CAError, register_ca, register_local_ca
from ..device_stats import device_stats
from ..guestos_install import InstallError
from ..host_power import HOST_POWEROFF, systemd_is_init
from ..scd_client import NotProvisioning, ScdError
from ..state import CmldState
from .replies import container_status, response
from .server import ControlConnection

log = logging.getLogger(__name__)
D = DaemonToController


def _read_all(path: Path) -> list[tuple[str, bool]]:
    return list(log_export.read_fragments(path))


class DeviceCommands:
    def __init__(self, state: CmldState) -> None:
        self.state = state

    # ------------------------------------------------------------------ queries

    async def list_guestos_configs(self, req: ControllerToDaemon, conn: ControlConnection) -> None:
        reply = D(code=D.GUESTOS_CONFIGS_LIST)
        reply.guestos_configs.extend(g.config for g in self.state.guestos.latest_all())
        await conn.send(reply)

    async def list_containers(self, req: ControllerToDaemon, conn: ControlConnection) -> None:
        reply = D(code=D.CONTAINERS_LIST)
        if req.system_services:
            reply.container_uuids.extend(u.uuid for u in self.state.units)
        reply.container_uuids.extend(c.uuid for c in self.state.containers.all())
        await conn.send(reply)

    async def get_container_status(self, req: ControllerToDaemon, conn: ControlConnection) -> None:
        units = {u.uuid: u for u in self.state.units}
        if not req.container_uuids:
            statuses = []
            if req.system_services:
                statuses += await asyncio.to_thread(lambda: [u.status() for u in units.values()])
            statuses += [self.state.container_status(c) for c in self.state.containers.all()]
            await conn.send(container_status(statuses))
            return
        statuses = []
        for uuid in req.container_uuids:
            if uuid in units:
                statuses.append(await asyncio.to_thread(units[uuid].status))
                continue
            c = self.state.containers.get(uuid)
            if c is None:
                log.warning("%s: GET_CONTAINER_STATUS for unknown container %r", conn, uuid)
                await conn.send(response(D.CMD_FAILED))
                return
            statuses.append(self.state.container_status(c))
        await conn.send(container_status(statuses))

    async def get_container_config(self, req: ControllerToDaemon, conn: ControlConnection) -> None:
        reply = D(code=D.CONTAINER_CONFIG)
        if req.container_uuids:
            chosen = []
            for uuid in req.container_uuids:
                c = self.state.containers.get(uuid)
                if c is None:
                    log.warning("%s: GET_CONTAINER_CONFIG for unknown container %r", conn, uuid)
                    await conn.send(response(D.CMD_FAILED))
                    return
                chosen.append(c)
        else:
            chosen = self.state.containers.all()
        for c in chosen:
            reply.container_uuids.append(c.uuid)
            reply.container_configs.append(c.config)
        await conn.send(reply)

    async def get_device_stats(self, req: ControllerToDaemon, conn: ControlConnection) -> None:
        stats = await asyncio.to_thread(device_stats, self.state.layout.base, self.state.layout.containers)
        await conn.send(D(code=D.DEVICE_STATS, device_stats=stats))

    async def get_last_log(self, req: ControllerToDaemon, conn: ControlConnection) -> None:
        files = log_export.log_files(self.state.log_dir)
        sent: list[Path] = []
        for path in files:
            try:
                pieces = await asyncio.to_thread(_read_all, path)
            except OSError as e:
                log.warning("cannot read log %s: %s", path, e)
                continue
            for text, final in pieces:
                code = D.LOG_MESSAGE_FINAL if final else D.LOG_MESSAGE_FRAGMENT
                msg = D(code=code, log_message=LogMessage(name=path.name, msg=text))
                if self.state.device_uuid:
                    msg.device_uuid = self.state.device_uuid
                await conn.send(msg)
            sent.append(path)
        if req.remove_logs and sent:
            removed = await asyncio.to_thread(log_export.remove_old_logs, self.state.log_dir, sent)
            log.info("%s: removed %d old log file(s)", conn, removed)
        await conn.send(response(D.CMD_OK if sent else D.CMD_FAILED))

    # ------------------------------------------------------------------ GuestOS and CAs

    async def push_guestos_config(self, req: ControllerToDaemon, conn: ControlConnection) -> None:
        """Verify, then INSTALL_STARTED, the images fetched and checked, then INSTALL_COMPLETED (or
        INSTALL_FAILED with the reason): several replies on one connection, as the original."""
        st = self.state
        installer = st.installer
        raw, sig, cert = req.guestos_config_file, req.guestos_config_signature, req.guestos_config_certificate
        try:
            cfg, trust = await installer.check(raw, sig, cert, st.trust_policy())
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
        st = self.state
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
            path, added = register_ca(self.state.layout.ca_dir, req.guestos_rootcert)
        except (CAError, OSError) as e:
            log.warning("%s: REGISTER_NEWCA refused: %s", conn, e)
            await conn.send(response(D.GUESTOS_MGR_REGISTER_CA_ERROR))
            return
        log.info("%s: CA %s %s", conn, path.name, "registered" if added else "was already registered")
        await conn.send(response(D.GUESTOS_MGR_REGISTER_CA_OK))

    async def register_localca(self, req: ControllerToDaemon, conn: ControlConnection) -> None:
        # The original never replies to this; every request gets a reply here.
        try:
            register_local_ca(self.state.layout.localca_cert, req.guestos_rootcert)
        except (CAError, OSError) as e:
            log.warning("%s: REGISTER_LOCALCA refused: %s", conn, e)
            await conn.send(response(D.GUESTOS_MGR_REGISTER_CA_ERROR))
            return
        log.info("%s: local CA registered", conn)
        await conn.send(response(D.GUESTOS_MGR_REGISTER_CA_OK))

    # ------------------------------------------------------------------ provisioning

    async def get_provisioned(self, req: ControllerToDaemon, conn: ControlConnection) -> None:
        await conn.send(D(code=D.DEVICE_PROVISIONED_STATE, device_is_provisioned=self.state.provisioned))

    async def set_provisioned(self, req: ControllerToDaemon, conn: ControlConnection) -> None:
        try:
            await asyncio.to_thread(self.state.set_provisioned)
        except OSError as e:
            log.error("%s: cannot write the provisioned marker: %s", conn, e)
            await conn.send(response(D.CMD_FAILED))
            return
        log.warning("%s: device is now PROVISIONED; the control API is restricted from now on", conn)
        await conn.send(response(D.CMD_OK))

    async def pull_device_csr(self, req: ControllerToDaemon, conn: ControlConnection) -> None:
        """The CSR scd made for this device; outside provisioning mode a DEVICE_CSR without one
        (the original's reply), with the reason in error_message and the log."""
        try:
            csr = await self.state.scd.pull_device_csr()
        except NotProvisioning:
            log.warning("%s: PULL_DEVICE_CSR: the device is not in provisioning mode (it has its certificate)",
                        conn)
            await conn.send(D(code=D.DEVICE_CSR, error_message="the device is not in provisioning mode"))
            return
        except ScdError as e:
            log.error("%s: PULL_DEVICE_CSR: %s", conn, e)
            await conn.send(D(code=D.DEVICE_CSR, error_message=str(e)))
            return
        log.info("%s: device CSR handed out (%d bytes)", conn, len(csr))
        await conn.send(D(code=D.DEVICE_CSR, device_csr=csr))

    async def push_device_cert(self, req: ControllerToDaemon, conn: ControlConnection) -> None:
        cert = req.device_cert
        if b"-----BEGIN CERTIFICATE-----" not in cert or b"-----END CERTIFICATE-----" not in cert:
            log.warning("%s: PUSH_DEVICE_CERT without a PEM certificate", conn)
            await conn.send(response(D.DEVICE_CERT_ERROR, "not a PEM certificate"))
            return
        try:
            await self.state.scd.push_device_cert(cert)
        except NotProvisioning:
            log.warning("%s: PUSH_DEVICE_CERT refused: the device is not in provisioning mode", conn)
            await conn.send(response(D.DEVICE_PROVISIONING_ERROR, "the device is not in provisioning mode"))
            return
        except ScdError as e:
            log.warning("%s: PUSH_DEVICE_CERT refused by scd: %s", conn, e)
            await conn.send(response(D.DEVICE_CERT_ERROR, "scd refused the certificate (not for this device's "
                                                          "key and UUID, or not valid; see scd's log)"))
            return
        log.warning("%s: device certificate installed", conn)
        await conn.send(response(D.DEVICE_CERT_OK))

    async def unsupported(self, req: ControllerToDaemon, conn: ControlConnection) -> None:
        log.warning("%s: %s is not supported by this cmld", conn, ControllerToDaemon.Command.Name(req.command))
        await conn.send(response(D.CMD_UNSUPPORTED))

    # ------------------------------------------------------------------ device operations

    async def reload_containers(self, req: ControllerToDaemon, conn: ControlConnection) -> None:
        try:
            uuids = await asyncio.to_thread(self.state.containers.reload)
        except OSError as e:
            log.error("%s: reload failed: %s", conn, e)
            await conn.send(response(D.CMD_FAILED))
            return
        log.info("%s: reloaded %d container config(s)", conn, len(uuids))
        await conn.send(response(D.CMD_OK))

    async def reboot_device(self, req: ControllerToDaemon, conn: ControlConnection) -> None:
        """As the original: CMD_OK at once, then every container is stopped (c0 first) and, on a
        device, the device reboots through systemd (cmld exits where systemd is not init). In
        hosted mode the host is never rebooted: stopping the containers is all."""
        await conn.send(response(D.CMD_OK))
        rt = self.state.runtime
        log.warning("%s: REBOOT_DEVICE: stopping every container%s", conn,
                    "" if self.state.hosted else ", then rebooting the device")
        if rt is not None:
            await rt.reboot_device()

    async def wipe_device(self, req: ControllerToDaemon, conn: ControlConnection) -> None:
        st = self.state
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
