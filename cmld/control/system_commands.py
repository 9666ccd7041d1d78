"""Device-wide operations: REBOOT_DEVICE, WIPE_DEVICE, DESTROY_SYSTEM, and the commands this cmld does
not offer."""

from __future__ import annotations

import asyncio
import logging
import shutil
from pathlib import Path

from cml_common.messages.control_pb2 import ControllerToDaemon
from cml_common.messages.control_pb2 import DaemonToController as D
from cml_common.tpm2d_client import Tpm2dClient, Tpm2dError
from cmld.control.family import CommandFamily
from cmld.control.replies import response
from cmld.control.server import ControlConnection
from cmld.crypt import scrub
from cmld.device import logs as log_export
from cmld.device.power import HOST_FORCED_REBOOT, systemd_is_init
from cmld.sysdata import config as sysdata_config
from cmld.sysdata import volume as sysdata_volume

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

        active = {c.uuid for c in st.containers.all() if c.is_active}

        def wipe() -> None:
            # Zeroed before unlinked (an unlinked file's blocks stay readable): every key and token
            # file, and the headers of every image not in use (c0's, mounted, goes down with it).
            scrub.destroy_tree(st.layout.keys)
            scrub.destroy_tree(st.layout.tokens)
            for p in sorted(st.layout.containers.iterdir()) if st.layout.containers.is_dir() else []:
                if p.is_dir() and not p.is_symlink() and p.name not in active:
                    scrub.scrub_images(p)
                elif p.is_file() and p.suffix == ".key":
                    scrub.overwrite(p)
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

    async def destroy_system(self, req: ControllerToDaemon, conn: ControlConnection) -> None:
        """As the original: CMD_OK first, then tpm2d clears the TPM (lockout auth empty), which takes
        every key sealed under it along, the system data volume's too; ours: that volume's LUKS
        keyslots are erased as well, so nothing (not even its recovery key) opens it again. Then a
        forced reboot, unless hosted (the original reboots only when the TPM clear worked)."""
        await conn.send(response(D.CMD_OK))
        st = self.cmld
        log.warning("%s: DESTROY_SYSTEM: clearing the TPM and the system data volume's keys", conn)
        cleared = False
        try:
            await asyncio.to_thread(_tpm_clear, st.tpm2d_socket)
            cleared = True
            log.warning("DESTROY_SYSTEM: the TPM is cleared")
        except (Tpm2dError, OSError) as e:
            log.error("DESTROY_SYSTEM: clearing the TPM through tpm2d failed: %s", e)
        erased = await asyncio.to_thread(_erase_sysdata, st.layout.base)
        if not (cleared or erased):
            log.error("DESTROY_SYSTEM: nothing was destroyed; the device is not rebooted")
        elif st.hosted or not systemd_is_init():
            log.warning("DESTROY_SYSTEM: no reboot (%s)", "hosted mode" if st.hosted else "systemd is not init")
        else:
            log.warning("DESTROY_SYSTEM: forced reboot")
            await asyncio.create_subprocess_exec(*HOST_FORCED_REBOOT)

    async def unsupported(self, req: ControllerToDaemon, conn: ControlConnection) -> None:
        log.warning("%s: %s is not supported by this cmld", conn, ControllerToDaemon.Command.Name(req.command))
        await conn.send(response(D.CMD_UNSUPPORTED))


def _tpm_clear(socket: Path | None) -> None:
    if socket is None:
        raise Tpm2dError("cmld has no tpm2d socket")
    with Tpm2dClient(socket, timeout=120.0) as tpm:
        tpm.clear("")


def _erase_sysdata(base: Path) -> bool:
    try:
        cfg = sysdata_config.load(base)
        if cfg is None:
            return False
        sysdata_volume.erase(cfg)
    except Exception as e:
        log.error("DESTROY_SYSTEM: erasing the system data volume's keyslots failed: %s", e)
        return False
    log.warning("DESTROY_SYSTEM: the keyslots of the system data volume %s are erased", cfg.device)
    return True
