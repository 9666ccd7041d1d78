"""The read-only queries: container list, status and configs, GuestOS list, device stats, and
the daemon's log files (GET_LAST_LOG, streamed in fragments as the original)."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

from cml_common.messages.container_pb2 import ContainerConfig
from cml_common.messages.control_pb2 import ControllerToDaemon, LogMessage
from cml_common.messages.control_pb2 import DaemonToController as D
from cmld.containers.container import Container
from cmld.control.family import CommandFamily
from cmld.control.replies import container_status, response
from cmld.control.server import ControlConnection
from cmld.device import logs as log_export
from cmld.device.stats import device_stats
from cmld.modules.network import NetworkModule

log = logging.getLogger(__name__)


def _read_all(path: Path) -> list[tuple[str, bool]]:
    return list(log_export.read_fragments(path))


class QueryCommands(CommandFamily):
    async def list_guestos_configs(self, req: ControllerToDaemon, conn: ControlConnection) -> None:
        reply = D(code=D.GUESTOS_CONFIGS_LIST)
        reply.guestos_configs.extend(g.config for g in self.cmld.guestos.latest_all())
        await conn.send(reply)

    async def list_containers(self, req: ControllerToDaemon, conn: ControlConnection) -> None:
        reply = D(code=D.CONTAINERS_LIST)
        if req.system_services:
            reply.container_uuids.extend(u.uuid for u in self.cmld.units)
        reply.container_uuids.extend(c.uuid for c in self.cmld.containers.all())
        await conn.send(reply)

    async def get_container_status(self, req: ControllerToDaemon, conn: ControlConnection) -> None:
        units = {u.uuid: u for u in self.cmld.units}
        if not req.container_uuids:
            statuses = []
            if req.system_services:
                statuses += await asyncio.to_thread(lambda: [u.status() for u in units.values()])
            statuses += [self.cmld.container_status(c) for c in self.cmld.containers.all()]
            await conn.send(container_status(statuses))
            return
        statuses = []
        for uuid in req.container_uuids:
            if uuid in units:
                statuses.append(await asyncio.to_thread(units[uuid].status))
                continue
            c = self.cmld.containers.get(uuid)
            if c is None:
                log.warning("%s: GET_CONTAINER_STATUS for unknown container %r", conn, uuid)
                await conn.send(response(D.CMD_FAILED))
                return
            statuses.append(self.cmld.container_status(c))
        await conn.send(container_status(statuses))

    async def get_container_config(self, req: ControllerToDaemon, conn: ControlConnection) -> None:
        reply = D(code=D.CONTAINER_CONFIG)
        if req.container_uuids:
            chosen = []
            for uuid in req.container_uuids:
                c = self.cmld.containers.get(uuid)
                if c is None:
                    log.warning("%s: GET_CONTAINER_CONFIG for unknown container %r", conn, uuid)
                    await conn.send(response(D.CMD_FAILED))
                    return
                chosen.append(c)
        else:
            chosen = self.cmld.containers.all()
        for c in chosen:
            reply.container_uuids.append(c.uuid)
            cfg = reply.container_configs.add()
            cfg.CopyFrom(c.config)
            self._runtime_vnets(c, cfg)
        await conn.send(reply)

    def _runtime_vnets(self, c: Container, cfg: ContainerConfig) -> None:
        """A running container's vnet_configs as made: router-side names and MACs (the original)."""
        rt = self.cmld.runtime
        comp = rt.compartments.get(c.uuid) if rt is not None else None
        module = comp.module(NetworkModule) if comp is not None else None
        if not isinstance(module, NetworkModule) or module.net is None or not module.net.vnets:
            return
        del cfg.vnet_configs[:]
        for v in module.net.runtime_vnets():
            cfg.vnet_configs.add(if_name=v.if_name, configure=v.configure, if_rootns_name=v.rootns_name,
                                 if_mac=v.mac)

    async def get_device_stats(self, req: ControllerToDaemon, conn: ControlConnection) -> None:
        stats = await asyncio.to_thread(device_stats, self.cmld.layout.base, self.cmld.layout.containers)
        await conn.send(D(code=D.DEVICE_STATS, device_stats=stats))

    async def get_last_log(self, req: ControllerToDaemon, conn: ControlConnection) -> None:
        files = log_export.log_files(self.cmld.log_dir)
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
                if self.cmld.device_uuid:
                    msg.device_uuid = self.cmld.device_uuid
                await conn.send(msg)
            sent.append(path)
        if req.remove_logs and sent:
            removed = await asyncio.to_thread(log_export.remove_old_logs, self.cmld.log_dir, sent)
            log.info("%s: removed %d old log file(s)", conn, removed)
        await conn.send(response(D.CMD_OK if sent else D.CMD_FAILED))
