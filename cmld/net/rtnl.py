"""Links, addresses and routes of one network namespace through pyroute2 (rtnetlink).

An `Rtnl` owns a netlink socket made inside its namespace (`Netns.netlink_fd`) and is used from
cmld's event loop. Errors come back as `NetError` naming the operation, the interface and the
kernel's reason.
"""

from __future__ import annotations

import logging
import socket
from dataclasses import dataclass
from typing import Any

from pyroute2 import AsyncIPRoute
from pyroute2.netlink.exceptions import NetlinkError

from cmld.net.netns import Netns

log = logging.getLogger(__name__)
IFF_UP = 0x1
ARPHRD_ETHER = 1
ARPHRD_LOOPBACK = 772


class NetError(OSError):
    """A network operation failed; the message says which and why."""


@dataclass
class Link:
    """What cmld needs to know of a link (and what `ip link` shows of it)."""

    index: int
    name: str
    kind: str  # IFLA_INFO_KIND: "veth", "bridge"...; "" for a hardware NIC
    mac: str
    flags: int
    link_type: int
    mtu: int = 0
    operstate: str = "UNKNOWN"
    qdisc: str = ""
    master: int = 0
    peer: int = 0  # IFLA_LINK (a veth's peer index)
    peer_netnsid: int | None = None
    broadcast: str = ""
    group: int = 0
    txqlen: int = 0
    parent: str = ""  # IFLA_PARENT_DEV_NAME: the bus device of a hardware NIC

    @property
    def up(self) -> bool:
        return bool(self.flags & IFF_UP)


def _link(msg: Any) -> Link:
    return Link(
        index=int(msg["index"]), name=str(msg.get("ifname") or ""),
        kind=str(msg.get_nested("IFLA_LINKINFO", "IFLA_INFO_KIND") or ""),
        mac=str(msg.get("address") or ""), flags=int(msg["flags"]), link_type=int(msg["ifi_type"]),
        mtu=int(msg.get("mtu") or 0), operstate=str(msg.get("operstate") or "UNKNOWN"),
        qdisc=str(msg.get("qdisc") or ""), master=int(msg.get("master") or 0),
        peer=int(msg.get("link") or 0), peer_netnsid=msg.get("link_netnsid"),
        broadcast=str(msg.get("broadcast") or ""), group=int(msg.get("group") or 0),
        txqlen=int(msg.get("txqlen") or 0), parent=str(msg.get("IFLA_PARENT_DEV_NAME") or ""),
    )


class Rtnl:
    def __init__(self, ns: Netns) -> None:
        self.ns = ns
        self._ipr: AsyncIPRoute | None = None

    async def _api(self) -> AsyncIPRoute:
        if self._ipr is None:
            ipr = AsyncIPRoute(fileno=await self.ns.netlink_fd())
            await ipr.setup_endpoint()
            self._ipr = ipr
        return self._ipr

    async def _do(self, what: str, coro_fn: Any, *args: Any, **kw: Any) -> Any:
        try:
            return await coro_fn(*args, **kw)
        except NetlinkError as e:
            raise NetError(e.code, f"{what} in {self.ns.label}: {e.args[1] if len(e.args) > 1 else e}") from None

    # ------------------------------------------------------------------ links

    async def links(self) -> list[Link]:
        ipr = await self._api()
        out = []
        async for msg in await self._do("listing links", ipr.link, "dump"):
            out.append(_link(msg))
        return out

    async def link(self, name: str) -> Link | None:
        return next((lk for lk in await self.links() if lk.name == name), None)

    async def by_mac(self, mac: str) -> Link | None:
        mac = mac.lower()
        return next((lk for lk in await self.links() if lk.mac.lower() == mac and lk.kind != "bridge"), None)

    async def index(self, name: str) -> int:
        """The interface's index (if_nametoindex on the namespace's thread: a dump or a get
        through pyroute2 decodes far more than this needs)."""
        try:
            return await self.ns.call(lambda: socket.if_nametoindex(name))
        except OSError:
            raise NetError(19, f"no interface {name!r} in {self.ns.label}") from None

    async def create_veth(self, name: str, peer: str, peer_ns: Netns | None, *,
                          peer_mac: bytes | None = None, up: bool = False) -> None:
        """A veth pair: `name` here (up at once with `up`), `peer` in `peer_ns` (made there
        directly: no moment where both ends are in this namespace). The kernel refuses a name
        already taken on either side (EEXIST)."""
        ipr = await self._api()
        peer_spec: dict[str, Any] = {"ifname": peer}
        if peer_ns is not None:
            peer_spec["net_ns_fd"] = peer_ns.fd
        if peer_mac is not None:
            peer_spec["address"] = ":".join(f"{b:02x}" for b in peer_mac)
        extra: dict[str, Any] = {"state": "up"} if up else {}
        await self._do(f"creating veth {name}/{peer}", ipr.link, "add", ifname=name, kind="veth", peer=peer_spec,
                       **extra)

    async def create_bridge(self, name: str) -> None:
        ipr = await self._api()
        await self._do(f"creating bridge {name}", ipr.link, "add", ifname=name, kind="bridge")

    async def set(self, name: str, **attrs: Any) -> None:
        ipr = await self._api()
        index = await self.index(name)
        await self._do(f"changing {name} ({', '.join(attrs)})", ipr.link, "set", index=index, **attrs)

    async def up(self, name: str) -> None:
        await self.set(name, state="up")

    async def down(self, name: str) -> None:
        await self.set(name, state="down")

    async def rename(self, name: str, new: str) -> None:
        """Renaming needs the link down; it is left down."""
        if name == new:
            return
        await self.down(name)
        await self.set(name, ifname=new)

    async def move(self, name: str, target: Netns, new_name: str | None = None) -> None:
        """Move a link into `target`, renamed on the way when `new_name` is given (one message:
        the name is never taken in the target under the old name)."""
        attrs: dict[str, Any] = {"net_ns_fd": target.fd}
        if new_name is not None and new_name != name:
            attrs["ifname"] = new_name
        await self.set(name, **attrs)

    async def enslave(self, name: str, master: str) -> None:
        await self.set(name, master=await self.index(master))

    async def delete(self, name: str) -> bool:
        """Remove a link; False if it was not there."""
        try:
            index = await self.index(name)
        except NetError:
            return False
        ipr = await self._api()
        try:
            await ipr.link("del", index=index)
        except NetlinkError as e:
            if e.code == 19:  # went away meanwhile (a veth whose peer's namespace died)
                return False
            raise NetError(e.code, f"removing {name} in {self.ns.label}: {e.args[1]}") from None
        return True

    # ------------------------------------------------------------------ addresses and routes

    async def add_ipv4(self, name: str, address: str, prefix: int, broadcast: str) -> None:
        ipr = await self._api()
        index = await self.index(name)
        await self._do(f"setting {address}/{prefix} on {name}", ipr.addr, "replace", index=index,
                       address=address, prefixlen=prefix, broadcast=broadcast)

    async def default_route(self, gateway: str) -> None:
        ipr = await self._api()
        await self._do(f"default route via {gateway}", ipr.route, "replace", dst="0.0.0.0/0", gateway=gateway)

    async def ipv4_addresses(self) -> dict[int, list[tuple[str, int]]]:
        ipr = await self._api()
        out: dict[int, list[tuple[str, int]]] = {}
        async for msg in await self._do("listing addresses", ipr.addr, "dump", family=2):
            out.setdefault(int(msg["index"]), []).append((str(msg.get("address")), int(msg["prefixlen"])))
        return out

    async def routes(self) -> list[tuple[str, str, int]]:
        """IPv4 routes of the main table: (destination, gateway, output index)."""
        ipr = await self._api()
        out = []
        async for msg in await self._do("listing routes", ipr.route, "dump", family=2, table=254):
            dst = msg.get("dst")
            out.append((f"{dst}/{msg['dst_len']}" if dst else "default", str(msg.get("gateway") or ""),
                        int(msg.get("oif") or 0)))
        return out

    def close(self) -> None:
        if self._ipr is not None:
            try:
                self._ipr.close()
            except Exception:  # closing a socket whose loop is gone: nothing left to release
                log.debug("closing rtnl of %s", self.ns.label, exc_info=True)
            self._ipr = None
