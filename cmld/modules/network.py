"""Network (the original's c_net): the container's own network namespace, bound at
/run/netns/<uuid> so `ip netns exec <uuid>` reaches it, with a veth per `vnet_configs` entry to
the router (c0 on a device, cmld's namespace in hosted mode), the NICs its `net_ifaces` names,
and the partition firewall on the router (`cmld.net`). c0 on a device gets the CML's uplink and
every free NIC instead of veths. `netns: false` shares cmld's namespace, as the original.
"""

from __future__ import annotations

import contextlib
import logging
import os
import time

from cmld import linux
from cmld.modules.base import Module, StartError
from cmld.modules.context import StartContext
from cmld.net import allow
from cmld.net.attach import DEFAULT_VNET, ContainerNet, VnetSpec
from cmld.net.fabric import NetFabric

log = logging.getLogger(__name__)


def unbind_netns(path: str) -> None:
    with contextlib.suppress(OSError):
        linux.umount2(path, linux.MNT_DETACH)
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)


def vnet_specs(ctx: StartContext) -> list[VnetSpec]:
    """The container's veths: its `vnet_configs`, or the original's default `host0` (configured);
    none for c0, which gets the uplink instead (the original gives c0 no vnet config)."""
    cfg = ctx.container.config
    if ctx.container.is_c0 and not ctx.settings.hosted:
        return []
    if not cfg.vnet_configs:
        return [VnetSpec(*DEFAULT_VNET)]
    return [VnetSpec(v.if_name, v.configure, v.if_rootns_name, v.if_mac) for v in cfg.vnet_configs]


class NetworkModule(Module):
    name = "network"

    def __init__(self, fabric: NetFabric | None = None) -> None:
        self.fabric = fabric
        self.bound: str | None = None
        self.net: ContainerNet | None = None

    async def prepare(self, ctx: StartContext) -> None:
        ctx.spec.netns = bool(ctx.container.config.netns)

    async def post_clone(self, ctx: StartContext) -> None:
        if not ctx.spec.netns:
            if self.fabric is not None:  # the original turns forwarding on for such a container
                await self.fabric.enable_forwarding(self.fabric.home)
            return
        d = ctx.settings.netns_dir
        path = str(d / ctx.uuid)
        if os.path.lexists(path):
            # Only this container's previous life can have left a binding of its UUID (a stop
            # whose cleanup raced with this start, or a crash): it names no live container.
            log.warning("container %s: removing a stale network namespace binding %s", ctx.container.name, path)
            unbind_netns(path)
        try:
            d.mkdir(parents=True, exist_ok=True)
            fd = os.open(path, os.O_RDONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o444)
            os.close(fd)
            self.bound = path
            ctx.netns_path = path
            linux.mount(f"/proc/{ctx.init_pid}/ns/net", path, None, linux.MS_BIND)
        except OSError as e:
            raise StartError(f"binding the network namespace at {path}: {e.strerror}") from None
        if self.fabric is None:
            return
        c = ctx.container
        try:
            self.net = ContainerNet.open(self.fabric, c.uuid, c.name, c.is_c0, ctx.init_pid)
        except OSError as e:
            raise StartError(f"network: opening the container's namespace: {e.strerror}") from None
        self.net.allows = tuple(allow.parse(c.config.net_allow))  # checked at create: cannot fail here
        pnets = [(p.netif, list(p.mac_filter)) for p in c.config.net_ifaces]
        t0 = time.perf_counter()
        await self.net.setup(vnet_specs(ctx), pnets)
        log.info("container %s: network set up in %.1f ms (%d veth, %d NIC)", c.name,
                 (time.perf_counter() - t0) * 1e3, len(self.net.vnets), len(self.net.nics))

    async def cleanup(self, ctx: StartContext, rebooting: bool) -> None:
        if self.net is not None:
            await self.net.teardown()
            self.net = None
        if self.bound is not None:
            unbind_netns(self.bound)
            self.bound = None
