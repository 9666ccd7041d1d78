"""Moving a physical NIC into a container and back, directly or through a MAC-filter bridge.

A NIC is named by interface name or MAC (`net_ifaces.netif`, `assign_iface --iface`). It is
found in cmld's namespace (free) or in c0 (which holds every free NIC on a device and gives it
back first, as in the original). Directly assigned, the NIC itself moves into the container.
With a `mac_filter`, it stays in cmld's namespace on a bridge `br_<nic>` with a veth
`r_<nic>`/`c_<nic>` whose `c_` end is the container's, and frames from source MACs not on the
list are dropped on the NIC (`firewall.MacFilter`).

Going back, a NIC gets the name cmld knows for it (so a container renaming it leaves no trace)
and returns to c0 (device mode, c0 running) or to cmld's namespace.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING

from cmld.net import firewall
from cmld.net.addressing import IFNAMSIZ, random_mac
from cmld.net.netns import Netns
from cmld.net.nics import normal_mac
from cmld.net.rtnl import NetError, Rtnl

if TYPE_CHECKING:
    from cmld.net.fabric import NetFabric, Router

log = logging.getLogger(__name__)


@dataclass
class HeldNic:
    mac: str
    name: str  # its name in cmld's namespace when it was taken (a bridge is named after it)
    netif: str  # as the config or the command named it
    bridged: bool


class NicMissing(NetError):
    """No interface by that name or MAC is present (the original then waits for a hotplug)."""


class NicMover:
    def __init__(self, fabric: NetFabric, uuid: str, ns: Netns, rtnl: Rtnl) -> None:
        self.fabric = fabric
        self.uuid = uuid
        self.ns = ns
        self.rtnl = rtnl

    async def _resolve(self, netif: str) -> str:
        """The MAC of the NIC `netif` names (a MAC, a name in cmld's namespace, a name in c0, or
        a name cmld gave it)."""
        mac = normal_mac(netif)
        if mac is not None:
            return mac
        lk = await self.fabric.home_rtnl.link(netif)
        if lk is not None:
            return lk.mac.lower()
        r = self.fabric.router
        if r is not None and r.owner and r.owner != self.uuid:
            lk = await r.rtnl.link(netif)
            if lk is not None and self.fabric.nics.holder.get(lk.mac.lower()) == r.owner:
                return lk.mac.lower()
        known = self.fabric.nics.mac_of_known_name(netif)
        if known is not None:
            return known
        raise NicMissing(19, f"no network interface {netif!r}")

    async def _from_c0(self, mac: str) -> None:
        """c0 holds the NIC: it comes back to cmld's namespace first (under its known name)."""
        r = self.fabric.router
        if r is None or not r.owner or self.fabric.nics.holder.get(mac) != r.owner or r.owner == self.uuid:
            return
        lk = await r.rtnl.by_mac(mac)
        if lk is None:
            raise NicMissing(19, f"NIC {mac} is not in c0 any more")
        await r.rtnl.move(lk.name, self.fabric.home, self.fabric.nics.known_name(mac) or lk.name)
        self.fabric.nics.release(mac)

    async def take(self, netif: str, bridged: bool, allowed: tuple[str, ...]) -> HeldNic:
        fabric = self.fabric
        mac = await self._resolve(netif)
        await self._from_c0(mac)
        if mac not in fabric.nics.free and mac not in fabric.nics.holder:
            await fabric.rescan()
        holder = fabric.nics.holder.get(mac)
        if holder is not None and holder != self.uuid:
            raise NetError(16, f"NIC {netif} ({mac}) is held by another container")
        lk = await fabric.home_rtnl.by_mac(mac)
        if lk is None:
            raise NicMissing(19, f"NIC {netif} ({mac}) is not present")
        if not fabric.nics.claim(mac, self.uuid):
            raise NetError(1, f"{netif} ({lk.name}) is not a physical NIC cmld may hand out")
        try:
            if bridged:
                await self._bridge(lk.name, mac, allowed)
            else:
                await fabric.home_rtnl.move(lk.name, self.ns)
        except BaseException:
            fabric.nics.release(mac)
            raise
        log.info("network: NIC %s (%s) %s into %s", lk.name, mac, "bridged" if bridged else "moved", self.ns.label)
        return HeldNic(mac, lk.name, netif, bridged)

    async def _bridge(self, nic: str, mac: str, allowed: tuple[str, ...]) -> None:
        fabric, home = self.fabric, self.fabric.home_rtnl
        br, outer, inner = f"br_{nic}", f"r_{nic}", f"c_{nic}"
        if len(br) > IFNAMSIZ:
            raise NetError(36, f"bridge name {br!r} for NIC {nic} is longer than {IFNAMSIZ} characters")
        fabric.journal.add_link(br, "bridge")
        fabric.journal.add_link(outer, "veth")
        try:
            await home.create_veth(outer, inner, self.ns, peer_mac=random_mac())
            await home.create_bridge(br)
            await home.enslave(nic, br)
            await home.enslave(outer, br)
            for name in (outer, nic, br):
                await home.up(name)
            await fabric.fw_add(fabric.home, firewall.mac_filter_add(firewall.MacFilter(nic, allowed)))
        except BaseException:
            await self._unbridge(nic)
            raise

    async def _unbridge(self, nic: str) -> None:
        fabric, home = self.fabric, self.fabric.home_rtnl
        await fabric.fw_del(fabric.home, [], [firewall.mac_filter_chain(nic)])
        for name in (f"r_{nic}", f"br_{nic}"):
            try:
                await home.delete(name)
            except NetError as e:
                log.warning("network: %s", e)
            fabric.journal.drop_link(name)
        try:
            await home.down(nic)
        except NetError as e:
            log.warning("network: %s", e)

    async def give_back(self, nic: HeldNic, to_c0: Router | None) -> None:
        fabric = self.fabric
        if nic.bridged:
            await self._unbridge(nic.name)
            fabric.nics.release(nic.mac)
            return
        lk = await self.rtnl.by_mac(nic.mac) if self.ns.fd >= 0 else None
        if lk is None:
            log.warning("network: NIC %s (%s) is not in %s any more", nic.name, nic.mac, self.ns.label)
            fabric.nics.holder.pop(nic.mac, None)
            return
        name = fabric.nics.known_name(nic.mac) or nic.name
        target = to_c0.ns if to_c0 is not None else fabric.home
        target_rtnl = to_c0.rtnl if to_c0 is not None else fabric.home_rtnl
        if await target_rtnl.link(name) is not None:
            raise NetError(17, f"cannot give {lk.name} back as {name}: the name is taken in {target.label}")
        if lk.up:
            await self.rtnl.down(lk.name)
        await self.rtnl.move(lk.name, target, name)
        if to_c0 is not None:
            fabric.nics.hand_over(nic.mac, to_c0.owner)
        else:
            fabric.nics.release(nic.mac)
        log.info("network: NIC %s (%s) back to %s", name, nic.mac, target.label)
