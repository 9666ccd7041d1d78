"""`ip link` blocks, as CONTAINER_LIST_IFACES answers them.

The original runs `nsenter -t <pid> -n ip link` and returns one string per interface (the
multi-line block of each). Here the same text is rendered from rtnetlink, in iproute2's layout,
so clients that parse it keep working; tests compare it with iproute2's own output.
"""

from __future__ import annotations

from cmld.net.rtnl import ARPHRD_ETHER, ARPHRD_LOOPBACK, Link

IFF_RUNNING = 0x40
# iproute2's order of the flags it names (print_link_flags)
_FLAGS = [("LOOPBACK", 0x8), ("BROADCAST", 0x2), ("POINTOPOINT", 0x10), ("MULTICAST", 0x1000),
          ("NOARP", 0x80), ("ALLMULTI", 0x200), ("PROMISC", 0x100), ("MASTER", 0x400), ("SLAVE", 0x800),
          ("DEBUG", 0x4), ("DYNAMIC", 0x8000), ("AUTOMEDIA", 0x4000), ("PORTSEL", 0x2000),
          ("NOTRAILERS", 0x20), ("UP", 0x1), ("LOWER_UP", 0x10000), ("DORMANT", 0x20000), ("ECHO", 0x40000)]
_TYPES = {ARPHRD_ETHER: "ether", ARPHRD_LOOPBACK: "loopback", 65534: "none"}


def flag_text(flags: int, peer_down: bool) -> str:
    words = []
    if flags & 0x1 and not flags & IFF_RUNNING:
        words.append("NO-CARRIER")
    flags &= ~IFF_RUNNING
    for name, bit in _FLAGS:
        if flags & bit:
            words.append(name)
            flags &= ~bit
    if flags:
        words.append(f"{flags:x}")
    text = ",".join(words)
    if peer_down:
        text += ",M-DOWN"
    return text


def block(lk: Link, by_index: dict[int, Link]) -> str:
    """One interface as `ip link` prints it (two lines, newline-terminated)."""
    name = lk.name
    peer_down = False
    if lk.peer and lk.peer != lk.index:
        if lk.peer_netnsid is not None:
            name += f"@if{lk.peer}"
        else:
            peer = by_index.get(lk.peer)
            name += f"@{peer.name}" if peer is not None else "@NONE"
            peer_down = peer is not None and not peer.up
    head = f"{lk.index}: {name}: <{flag_text(lk.flags, peer_down)}> mtu {lk.mtu} "
    if lk.qdisc:
        head += f"qdisc {lk.qdisc} "
    if lk.master:
        master = by_index.get(lk.master)
        head += f"master {master.name if master else lk.master} "
    head += f"state {lk.operstate} mode DEFAULT group {'default' if lk.group == 0 else lk.group}"
    head += f" qlen {lk.txqlen}" if lk.txqlen else ""
    kind = _TYPES.get(lk.link_type, str(lk.link_type))
    second = f"    link/{kind}"
    if lk.mac:
        second += f" {lk.mac}"
        if lk.broadcast:
            second += f" brd {lk.broadcast}"
    if lk.peer_netnsid is not None:
        second += f" link-netnsid {lk.peer_netnsid}"
    return f"{head}\n{second}\n"


def blocks(links: list[Link]) -> list[str]:
    by_index = {lk.index: lk for lk in links}
    return [block(lk, by_index) for lk in sorted(links, key=lambda lk: lk.index)]
