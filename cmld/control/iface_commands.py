"""CONTAINER_ASSIGNIFACE / UNASSIGNIFACE / LIST_IFACES: physical NICs moved in and out of a
running container, and the container's interfaces as `ip link` blocks.

`persistent` also adds the NIC to (or removes it from) the container's `net_ifaces` on disk. The
original silently skips that write when configs are signed (a file cmld wrote would no longer
match its signature); here such a request is refused before anything moves, with the reason.
"""

from __future__ import annotations

import logging

from cml_common.messages.container_pb2 import ContainerConfig
from cml_common.messages.control_pb2 import ControllerToDaemon
from cml_common.messages.control_pb2 import DaemonToController as D
from cml_common.textconfig import to_text
from cmld.containers.container import Container
from cmld.control.family import CommandFamily, state_name
from cmld.control.replies import response
from cmld.control.server import ControlConnection
from cmld.errors import CmldError
from cmld.modules.network import NetworkModule
from cmld.net import iplink
from cmld.net.attach import ContainerNet
from cmld.net.rtnl import NetError

log = logging.getLogger(__name__)


class InterfaceCommands(CommandFamily):
    def _iface(self, req: ControllerToDaemon) -> tuple[str, bool]:
        if not (req.HasField("assign_iface_params") and req.assign_iface_params.iface_name):
            raise CmldError(f"{ControllerToDaemon.Command.Name(req.command)} without an interface name")
        p = req.assign_iface_params
        name = p.iface_name
        if len(name) > 64 or any(ch.isspace() or ch in "/\0" for ch in name):
            raise CmldError(f"{name[:64]!r} is neither an interface name nor a MAC address")
        if p.persistent and self.cmld.signed_configs:
            raise CmldError("--persistent changes the container's config, which is signed on this device: "
                            "update the signed config instead")
        return name, p.persistent

    def _net(self, c: Container) -> ContainerNet:
        comp = self.runtime().compartment(c)
        module = comp.module(NetworkModule)
        net = module.net if isinstance(module, NetworkModule) else None
        if net is None or not c.is_active:
            why = "has no network namespace of its own" if not c.config.netns else f"is {state_name(c)}"
            raise CmldError(f"container {c.name} {why}")
        return net

    def _persist(self, c: Container, netif: str, add: bool) -> None:
        """The file and the config in force change together: the NIC list is live already. An
        update still pending (update_config while running) gets the change as well."""
        pending = c.pending_config is not None
        cfg = ContainerConfig()
        cfg.CopyFrom(c.pending_config or c.config)
        kept = [p for p in cfg.net_ifaces if p.netif != netif]
        del cfg.net_ifaces[:]
        cfg.net_ifaces.extend(kept)
        if add:
            cfg.net_ifaces.add(netif=netif)
        self.cmld.containers.update(c, to_text(cfg).encode(), cfg)
        if not pending:
            c.config, c.pending_config = cfg, None

    async def assign_iface(self, req: ControllerToDaemon, conn: ControlConnection) -> None:
        c = self.target(req, conn)
        netif, persistent = self._iface(req)
        try:
            await self._net(c).assign(netif)
        except NetError as e:
            raise CmldError(f"assigning {netif} to {c.name}: {e}") from None
        if persistent:
            self._persist(c, netif, add=True)
        log.info("%s: %s assigned to %s%s", conn, netif, c.name, " (persistent)" if persistent else "")
        await conn.send(response(D.CMD_OK))

    async def unassign_iface(self, req: ControllerToDaemon, conn: ControlConnection) -> None:
        c = self.target(req, conn)
        netif, persistent = self._iface(req)
        try:
            found = await self._net(c).unassign(netif)
        except NetError as e:
            raise CmldError(f"taking {netif} from {c.name}: {e}") from None
        if not found:
            raise CmldError(f"container {c.name} holds no interface {netif!r}")
        if persistent:
            self._persist(c, netif, add=False)
        log.info("%s: %s taken from %s%s", conn, netif, c.name, " (persistent)" if persistent else "")
        await conn.send(response(D.CMD_OK))

    async def list_ifaces(self, req: ControllerToDaemon, conn: ControlConnection) -> None:
        """A container that is not running has no interfaces (the original's nsenter fails and it
        answers an empty list); one without its own namespace shows cmld's."""
        c = self.target(req, conn)
        rt = self.runtime()
        blocks: list[str] = []
        if c.is_active and not c.config.netns:
            blocks = iplink.blocks(await rt.net.home_rtnl.links())
        elif c.is_active:
            try:
                blocks = await self._net(c).ifaces()
            except (CmldError, NetError) as e:
                log.warning("%s: interfaces of %s: %s", conn, c.name, e)
        await conn.send(D(code=D.CONTAINER_IFACES, container_ifaces=blocks))
