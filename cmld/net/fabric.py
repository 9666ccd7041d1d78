"""The network every container shares: cmld's own namespace ("home"), the router, the address
offsets, the physical NICs, and the firewall of both.

The router is where the outer ends of container veths live and where they are routed and
filtered: c0's namespace on a device (c0 is the only router, as in the original), cmld's own in
hosted mode (no c0). The firewall (`firewall.py`) has a base per namespace, made with the first
container's part, and each container adds and removes its own part in one small nftables
transaction. The lock guards offsets and those transactions only: the netlink work of
containers started together runs side by side.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass
from pathlib import Path

from cmld.errors import StartError
from cmld.linux import nftables
from cmld.net import allow, firewall
from cmld.net.addressing import MAX_OFFSETS, OffsetPool
from cmld.net.journal import Journal
from cmld.net.netns import Netns
from cmld.net.nics import NicRegistry
from cmld.net.rtnl import NetError, Rtnl

log = logging.getLogger(__name__)
UPLINK_HOME = "uplink"  # the CML's end of its uplink through c0
UPLINK_C0 = "cml"  # c0's end


@dataclass
class Router:
    ns: Netns
    rtnl: Rtnl
    owner: str  # uuid of c0, or "" for cmld's own namespace


class NetFabric:
    def __init__(self, run_dir: Path, hosted: bool, nic_kinds: frozenset[str] = frozenset()) -> None:
        self.hosted = hosted
        self.journal = Journal(run_dir / "network.json")
        self.nics = NicRegistry(self.journal, nic_kinds)
        self.offsets = OffsetPool()
        self.lock = asyncio.Lock()
        self._home: Netns | None = None
        self._home_rtnl: Rtnl | None = None
        self.router: Router | None = None
        self._based: set[tuple[int, int]] = set()  # namespaces whose firewall base exists
        self._forwarding: set[tuple[int, int]] = set()
        self.members: dict[str, allow.Member] = {}  # running containers, for the `allowed` set
        self.cml_address: str | None = None  # the CML's uplink address on a device (c0 running)

    # ------------------------------------------------------------------ namespaces

    @property
    def home(self) -> Netns:
        if self._home is None:
            self._home = Netns.current("cmld")
        return self._home

    @property
    def home_rtnl(self) -> Rtnl:
        if self._home_rtnl is None:
            self._home_rtnl = Rtnl(self.home)
        return self._home_rtnl

    def router_for(self, is_c0: bool) -> Router:
        """Where a container's veths end outside it; StartError on a device without c0 running."""
        if self.hosted:
            if self.router is None:
                self.router = Router(self.home, self.home_rtnl, "")
            return self.router
        if self.router is None or not self.router.owner:
            raise StartError("c0 is not running: a container's network goes through c0, its router")
        return self.router

    def set_c0_router(self, ns: Netns, rtnl: Rtnl, uuid: str) -> Router:
        self.router = Router(ns, rtnl, uuid)
        return self.router

    def drop_c0_router(self, uuid: str) -> None:
        if self.router is not None and self.router.owner == uuid:
            self._based.discard(self.router.ns.ident)
            self._forwarding.discard(self.router.ns.ident)
            self.router = None

    async def enable_forwarding(self, ns: Netns) -> None:
        """IPv4 forwarding in a router namespace (as the original, never turned off again)."""
        if ns.ident not in self._forwarding:
            await ns.sysctl("ipv4/ip_forward", "1")
            self._forwarding.add(ns.ident)

    # ------------------------------------------------------------------ offsets and names

    def take_offset(self) -> int:
        """The first free offset (the caller holds the lock)."""
        n = self.offsets.take()
        if n is None:
            raise StartError(f"no free network offset: all {MAX_OFFSETS} subnets 172.23.n.0/24 are in use")
        return n

    # ------------------------------------------------------------------ the firewall

    async def _nft(self, ns: Netns, cmds: list[firewall.Cmd]) -> None:
        try:
            await ns.call(lambda: nftables.run_json(cmds))
        except nftables.NftError as e:
            raise NetError(5, f"firewall in {ns.label}: {e}") from None

    async def fw_add(self, ns: Netns, cmds: list[firewall.Cmd]) -> None:
        """Add a container's part in one transaction, with the base the first time (caller holds
        the lock)."""
        if ns.ident not in self._based:
            if ns.same_as(self.home):
                self.journal.set_tables(True)
            cmds = firewall.removal() + firewall.base() + cmds
        await self._nft(ns, cmds)
        self._based.add(ns.ident)

    async def fw_del(self, ns: Netns, cmds: list[firewall.Cmd], chains: list[str]) -> None:
        """Remove a part: never raises (what is gone already is fine), logs what failed."""
        if ns.ident not in self._based or ns.fd < 0:
            return
        for batch in ([cmds] if cmds else []) + [firewall.chain_del(c) for c in chains]:
            try:
                await self._nft(ns, batch)
            except NetError as e:
                log.debug("network: %s", e)

    async def refresh_allowed(self) -> None:
        """The router's `allowed` set from every running container's `net_allow` (caller holds the
        lock). Nothing to do while the router has no firewall yet (no container port on it)."""
        r = self.router
        if r is None or r.ns.ident not in self._based or r.ns.fd < 0:
            return
        elems = allow.elements(self.members.values(), None if self.hosted else self.cml_address)
        await self._nft(r.ns, firewall.allowed_replace(elems))

    # ------------------------------------------------------------------ start-up

    async def setup(self) -> None:
        """At cmld start, after the previous cmld's containers were stopped: take away what it
        left in this namespace, then find the physical NICs (renamed `cml...` on a device)."""
        self.journal.load()
        rtnl = self.home_rtnl
        for name, kind in sorted(self.journal.links.items()):
            lk = await rtnl.link(name)
            if lk is not None and lk.kind == kind:
                log.warning("network: removing %s %s left by a previous cmld", kind, name)
                with contextlib.suppress(NetError):
                    await rtnl.delete(name)
        self.journal.clear_links()
        if self.journal.tables:
            try:
                await self.home.call(lambda: nftables.run_json(firewall.removal()))
                self.journal.set_tables(False)
            except nftables.NftError as e:
                log.warning("network: cannot remove cmld's nftables tables left by a previous cmld: %s", e)
        links = await rtnl.links()
        for lk in links:  # NICs a crashed cmld had lent out come back with the kernel's name
            known = self.nics.known_name(lk.mac.lower())
            if known and lk.name != known and lk.kind == "" and not any(x.name == known for x in links):
                with contextlib.suppress(NetError):
                    await rtnl.rename(lk.name, known)
                    lk.name = known
        for lk in self.nics.scan(links):
            mac = lk.mac.lower()
            if not self.hosted:
                new = self.nics.device_name(lk)
                if new != lk.name:
                    log.info("network: renaming NIC %s (%s) to %s", lk.name, mac, new)
                    try:
                        await rtnl.rename(lk.name, new)
                        lk.name = new
                    except NetError as e:
                        log.error("network: %s", e)
            self.nics.remember(mac, lk.name)
            log.info("network: physical NIC %s (%s)", lk.name, mac)

    async def rescan(self) -> None:
        """NICs that appeared in cmld's namespace since start (hotplugged, or handed in by a test)."""
        for lk in self.nics.scan(await self.home_rtnl.links()):
            self.nics.remember(lk.mac.lower(), lk.name)
            log.info("network: new physical NIC %s (%s)", lk.name, lk.mac)

    async def shutdown(self) -> None:
        """cmld stops: its tables go from its namespace (the containers are gone already)."""
        if self.journal.tables:
            try:
                await self._nft(self.home, firewall.removal())
                self.journal.set_tables(False)
            except NetError as e:
                log.warning("network: %s", e)
        self._based.clear()
        if self._home_rtnl is not None:
            self._home_rtnl.close()
