"""One container's network: its veths to the router, c0's uplink, and the NICs it holds.

Made by cmld from outside, through netlink sockets opened in the namespaces concerned, while the
container's init waits for GO (post_clone): nothing runs inside the container for it. Each veth
is created with its two ends directly in their namespaces (router side named `r_<n>` or
`if_rootns_name`, container side `if_name` with the configured or a random MAC), so a pair never
exists half-moved and dies with the container's namespace whatever happens to cmld.
"""

from __future__ import annotations

import contextlib
import logging
from dataclasses import dataclass, field

from cmld.errors import StartError
from cmld.net import allow, firewall, iplink
from cmld.net.addressing import PREFIX, Subnet, format_mac, valid_ifname, veth_mac
from cmld.net.fabric import UPLINK_C0, UPLINK_HOME, NetFabric, Router
from cmld.net.netns import Netns
from cmld.net.nic_moves import HeldNic, NicMissing, NicMover
from cmld.net.nics import normal_mac
from cmld.net.rtnl import NetError, Rtnl

log = logging.getLogger(__name__)
DEFAULT_VNET = ("host0", True, "", "")  # the original's default: one `host0`, configured


@dataclass
class VnetSpec:
    if_name: str
    configure: bool
    rootns_name: str = ""
    mac: str = ""


@dataclass
class Vnet:
    """A veth made for the container; `root_name` is the router-side name actually used."""

    if_name: str
    root_name: str
    mac: bytes
    configure: bool
    offset: int


@dataclass
class ContainerNet:
    fabric: NetFabric
    uuid: str
    label: str
    is_router: bool  # c0 on a device
    ns: Netns
    rtnl: Rtnl
    router: Router | None = None
    vnets: list[Vnet] = field(default_factory=list)
    nics: list[HeldNic] = field(default_factory=list)
    ports: list[firewall.Port] = field(default_factory=list)
    masq: list[str] = field(default_factory=list)  # subnets the router masquerades for it
    uplink_offset: int | None = None
    allows: tuple[allow.Allow, ...] = ()  # its config's net_allow (allow.py)

    @classmethod
    def open(cls, fabric: NetFabric, uuid: str, label: str, is_c0: bool, init_pid: int) -> ContainerNet:
        ns = Netns.of_pid(init_pid, label)
        return cls(fabric, uuid, label, is_c0 and not fabric.hosted, ns, Rtnl(ns))

    @property
    def mover(self) -> NicMover:
        return NicMover(self.fabric, self.uuid, self.ns, self.rtnl)

    # ------------------------------------------------------------------ start

    async def setup(self, vnets: list[VnetSpec], pnets: list[tuple[str, list[str]]]) -> None:
        """Everything the container's config asks for; StartError (with what failed) otherwise.
        On failure the caller runs `teardown`, which undoes whatever was made."""
        try:
            if self.is_router:
                await self._uplink()
            else:
                self.router = self.fabric.router_for(False)
                for spec in vnets:
                    await self._vnet(self.router, spec)
                first = self.vnets[0] if self.vnets else None
                if first is not None and first.configure:
                    await self.rtnl.default_route(Subnet(first.offset).router)
                if self.vnets:
                    await self.fabric.enable_forwarding(self.router.ns)
                    cmds = [c for p in self.ports for c in firewall.port_add(p)]
                    async with self.fabric.lock:
                        await self.fabric.fw_add(self.router.ns, cmds + firewall.masquerade("add", self.masq))
            async with self.fabric.lock:
                self.fabric.members[self.uuid] = self._member()
                await self.fabric.refresh_allowed()
                for netif, mac_filter in pnets:
                    await self._take_configured(netif, mac_filter)
                if self.is_router:
                    await self._take_free_nics()
        except (NetError, OSError) as e:
            raise StartError(f"network: {e}") from None

    def _member(self) -> allow.Member:
        return allow.Member(self.label, self.is_router, tuple((p.name, p.subnet) for p in self.ports), self.allows)

    async def _vnet(self, router: Router, spec: VnetSpec) -> None:
        """One veth. Names are not looked up first: the kernel refuses a taken one (EEXIST). A
        taken `if_rootns_name` falls back to `r_<n>` (the original); a taken `r_<n>` (someone's
        `if_rootns_name`) moves on to the next offset."""
        for name in (spec.if_name, spec.rootns_name):
            if name and not valid_ifname(name):
                raise StartError(f"network: {name!r} is not a valid interface name")
        fabric = self.fabric
        at_home = router.ns.same_as(fabric.home)
        mac = veth_mac(spec.mac)
        async with fabric.lock:
            offset = fabric.take_offset()
        root = spec.rootns_name or f"r_{offset}"
        for _ in range(8):
            if at_home:
                fabric.journal.add_link(root, "veth")
            try:
                await router.rtnl.create_veth(root, spec.if_name, self.ns, peer_mac=mac, up=True)
                break
            except NetError as e:
                fabric.journal.drop_link(root)
                if e.errno != 17 or any(v.if_name == spec.if_name for v in self.vnets):
                    fabric.offsets.release(offset)
                    raise
                if root == spec.rootns_name:
                    log.warning("network: %s: %s is taken on the router, using r_%d (as the original)",
                                self.label, root, offset)
                else:
                    async with fabric.lock:
                        taken, offset = offset, fabric.take_offset()
                    log.info("network: %s: r_%d is taken on the router, using r_%d", self.label, taken, offset)
                root = f"r_{offset}"
        else:
            fabric.offsets.release(offset)
            raise NetError(17, f"no free router-side name for {spec.if_name}")
        self.vnets.append(Vnet(spec.if_name, root, mac, spec.configure, offset))
        sub = Subnet(offset) if spec.configure else None
        if sub is not None:
            await router.rtnl.add_ipv4(root, sub.router, PREFIX, sub.broadcast)
            await self.rtnl.add_ipv4(spec.if_name, sub.container, PREFIX, sub.broadcast)
            await self.rtnl.up(spec.if_name)
            self.masq.append(sub.cidr)
        self.ports.append(firewall.Port(root, format_mac(mac), sub))

    async def _uplink(self) -> None:
        """c0 on a device: the CML's uplink (`uplink` here, `cml` in c0, 172.23.n.1/.2), the CML's
        default route through c0, and c0 becomes the router that masquerades the CML."""
        fabric = self.fabric
        home = fabric.home_rtnl
        async with fabric.lock:
            offset = fabric.take_offset()
        self.uplink_offset = offset
        sub = Subnet(offset)
        fabric.journal.add_link(UPLINK_HOME, "veth")
        await home.delete(UPLINK_HOME)  # one a crashed c0 start left
        await home.create_veth(UPLINK_HOME, UPLINK_C0, self.ns, up=True)
        await home.add_ipv4(UPLINK_HOME, sub.router, PREFIX, sub.broadcast)
        await self.rtnl.add_ipv4(UPLINK_C0, sub.container, PREFIX, sub.broadcast)
        await self.rtnl.up(UPLINK_C0)
        await home.default_route(sub.container)
        fabric.cml_address = sub.router
        self.router = fabric.set_c0_router(self.ns, self.rtnl, self.uuid)
        await fabric.enable_forwarding(self.ns)
        self.masq.append(sub.cidr)
        async with fabric.lock:
            await fabric.fw_add(self.ns, firewall.uplink("add", UPLINK_C0) + firewall.masquerade("add", self.masq))

    async def _take_configured(self, netif: str, mac_filter: list[str]) -> None:
        allowed = tuple(m for m in (normal_mac(x) for x in mac_filter) if m)
        bad = [x for x in mac_filter if not normal_mac(x)]
        if bad:
            log.warning("network: %s: ignoring mac_filter entries that are not MACs: %s", self.label, bad)
        try:
            self.nics.append(await self.mover.take(netif, bool(mac_filter), allowed))
        except NicMissing as e:
            # The original registers the MAC with hotplug and starts without it (no hotplug here:
            # `assign_iface` brings it in once it is there).
            log.warning("network: %s: %s; the container starts without it", self.label, e)

    async def _take_free_nics(self) -> None:
        """c0 takes every NIC no container holds (the original: all free physical NICs)."""
        await self.fabric.rescan()
        for mac in list(self.fabric.nics.free):
            try:
                self.nics.append(await self.mover.take(mac, False, ()))
            except (NicMissing, NetError) as e:
                log.warning("network: c0 cannot take NIC %s: %s", mac, e)

    # ------------------------------------------------------------------ runtime

    async def assign(self, netif: str) -> None:
        async with self.fabric.lock:
            if any(n.netif == netif or n.mac == normal_mac(netif) or n.name == netif for n in self.nics):
                raise NetError(17, f"{netif} is already assigned to {self.label}")
            self.nics.append(await self.mover.take(netif, False, ()))

    async def unassign(self, netif: str) -> bool:
        """Give a NIC back (by the name it has inside, its MAC, or as it was named); False if this
        container holds no such NIC."""
        async with self.fabric.lock:
            inside = {lk.mac.lower(): lk.name for lk in await self.rtnl.links()}
            for nic in self.nics:
                if netif in (nic.netif, nic.mac, nic.name, inside.get(nic.mac)) or normal_mac(netif) == nic.mac:
                    await self.mover.give_back(nic, self.router_ns_for_return())
                    self.nics.remove(nic)
                    return True
            return False

    def router_ns_for_return(self) -> Router | None:
        """Where a NIC goes when this container lets it go: c0 (on a device, when it runs and this
        is not c0), else cmld's namespace."""
        r = self.fabric.router
        return r if r is not None and r.owner and r.owner != self.uuid else None

    async def ifaces(self) -> list[str]:
        return iplink.blocks(await self.rtnl.links())

    def runtime_vnets(self) -> list[VnetSpec]:
        return [VnetSpec(v.if_name, v.configure, v.root_name, format_mac(v.mac)) for v in self.vnets]

    # ------------------------------------------------------------------ stop

    async def teardown(self) -> None:
        """Undo everything, also after a start that failed half-way; never raises."""
        fabric = self.fabric
        async with fabric.lock:
            for nic in reversed(self.nics):
                try:
                    await self.mover.give_back(nic, self.router_ns_for_return())
                except (NetError, OSError) as e:
                    log.warning("network: %s: giving back %s: %s", self.label, nic.name, e)
            self.nics.clear()
            if fabric.members.pop(self.uuid, None) is not None and not self.is_router:
                try:
                    await fabric.refresh_allowed()
                except NetError as e:
                    log.warning("network: %s: %s", self.label, e)
            router = self.router
            if router is not None and not self.is_router and self.ports:
                cmds = [c for p in self.ports for c in firewall.port_del(p)] + firewall.masquerade("delete", self.masq)
                await fabric.fw_del(router.ns, cmds, [firewall.port_chain(p.name) for p in self.ports])
            for v in self.vnets:
                if router is not None and router.ns.fd >= 0:
                    with contextlib.suppress(NetError, OSError):
                        await router.rtnl.delete(v.root_name)
                fabric.journal.drop_link(v.root_name)
                fabric.offsets.release(v.offset)
            self.vnets.clear()
            self.ports.clear()
            self.masq.clear()
            if self.is_router:
                with contextlib.suppress(NetError, OSError):
                    await fabric.home_rtnl.delete(UPLINK_HOME)
                fabric.journal.drop_link(UPLINK_HOME)
                if self.uplink_offset is not None:
                    fabric.offsets.release(self.uplink_offset)
                fabric.drop_c0_router(self.uuid)
                fabric.cml_address = None
        self.rtnl.close()
        self.ns.close()
