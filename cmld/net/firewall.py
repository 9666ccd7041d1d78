"""The partition firewall as nftables JSON: what a container may send, built from the live
topology and replaced in one transaction whenever it changes.

Deny by default between partitions. On the router (c0 on a device, cmld's namespace in hosted
mode), every container link ("port") is guarded twice:

- `netdev cmld`, an ingress chain on the port (policy drop): only frames from the container's own
  MAC pass; with cmld-assigned addresses only IPv4 from its own address and ARP that claims its
  own MAC and address, so spoofed sources, ARP spoofing and every IPv6 packet (router
  advertisements and neighbour discovery included) are dropped. A port left to manual
  configuration (`configure: false`) keeps the MAC checks and loses RAs and redirects.
- `inet cmld`: a container reaches its own gateway with ICMP echo and nothing else on the router
  (no service of c0 or of the CML); nothing is forwarded into a container unless it answers a
  connection the container made (no container -> container, CML -> container, outside ->
  container); nothing is forwarded from a container to the CML uplink; the rest, a container
  going out, is forwarded and masqueraded.

A physical NIC bridged with a MAC allow-list (`net_ifaces { mac_filter }`) gets an ingress chain
that drops frames from other source MACs (the original's physdev/mac iptables rules).

The tables are cmld's alone (`cmld`, in each family): rebuilding them never touches anyone
else's rules, and base chains whose policy is accept leave other traffic alone.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from cmld.net.addressing import Subnet

TABLE = "cmld"
PORT_PRIORITY = -500  # before anything else on the device
FILTER_PRIORITY = -10  # before the usual filter chains (0)
NAT_PRIORITY = 100  # srcnat


@dataclass(frozen=True)
class Port:
    """The router-side end of a container's virtual interface."""

    name: str
    mac: str  # the container side's MAC
    subnet: Subnet | None  # None: `configure: false`, addresses are not cmld's


@dataclass(frozen=True)
class MacFilter:
    nic: str
    allowed: tuple[str, ...]


@dataclass
class Policy:
    ports: list[Port] = field(default_factory=list)
    uplink: str = ""  # c0's end of the CML uplink (device mode): containers may not reach it
    masquerade: list[str] = field(default_factory=list)  # source subnets masqueraded going out
    mac_filters: list[MacFilter] = field(default_factory=list)

    @property
    def empty(self) -> bool:
        return not (self.ports or self.masquerade or self.mac_filters)


# ---------------------------------------------------------------------- expression helpers


def _match(left: dict[str, Any], right: Any, op: str = "==") -> dict[str, Any]:
    return {"match": {"op": op, "left": left, "right": right}}


def _meta(key: str) -> dict[str, Any]:
    return {"meta": {"key": key}}


def _payload(protocol: str, fld: str) -> dict[str, Any]:
    return {"payload": {"protocol": protocol, "field": fld}}


def _set(values: list[str]) -> Any:
    return values[0] if len(values) == 1 else {"set": values}


ACCEPT: dict[str, Any] = {"accept": None}
DROP: dict[str, Any] = {"drop": None}
COUNTER: dict[str, Any] = {"counter": None}


def _rule(family: str, chain: str, *expr: dict[str, Any]) -> dict[str, Any]:
    return {"add": {"rule": {"family": family, "table": TABLE, "chain": chain, "expr": list(expr)}}}


def _base_chain(family: str, name: str, kind: str, hook: str, prio: int, policy: str,
                dev: str = "") -> dict[str, Any]:
    chain: dict[str, Any] = {"family": family, "table": TABLE, "name": name, "type": kind, "hook": hook,
                             "prio": prio, "policy": policy}
    if dev:
        chain["dev"] = dev
    return {"add": {"chain": chain}}


def _fresh_table(family: str) -> list[dict[str, Any]]:
    """Add-then-delete makes the delete succeed whether the table existed or not."""
    table = {"family": family, "name": TABLE}
    return [{"add": {"table": table}}, {"delete": {"table": table}}]


def port_chain_name(port: str) -> str:
    return f"in_{port}"


# ---------------------------------------------------------------------- the rulesets


def _port_rules(p: Port) -> list[dict[str, Any]]:
    f, chain = "netdev", port_chain_name(p.name)
    out = [_base_chain(f, chain, "filter", "ingress", PORT_PRIORITY, "drop", dev=p.name)]
    own_mac = _match(_payload("ether", "saddr"), p.mac)
    if p.subnet is not None:
        out.append(_rule(f, chain, own_mac, _match(_payload("ether", "type"), "arp"),
                         _match(_payload("arp", "saddr ether"), p.mac),
                         _match(_payload("arp", "saddr ip"), p.subnet.container), ACCEPT))
        out.append(_rule(f, chain, own_mac, _match(_payload("ether", "type"), "ip"),
                         _match(_payload("ip", "saddr"), p.subnet.container), ACCEPT))
    else:
        out.append(_rule(f, chain, own_mac, _match(_payload("ether", "type"), "ip6"),
                         _match(_payload("icmpv6", "type"), {"set": ["nd-router-advert", "nd-redirect"]}),
                         DROP))
        out.append(_rule(f, chain, own_mac, _match(_payload("ether", "type"), "arp"),
                         _match(_payload("arp", "saddr ether"), p.mac), ACCEPT))
        out.append(_rule(f, chain, own_mac, _match(_payload("ether", "type"), "arp", "!="), ACCEPT))
    out.append(_rule(f, chain, COUNTER, DROP))
    return out


def _mac_filter_rules(m: MacFilter) -> list[dict[str, Any]]:
    f, chain = "netdev", f"macf_{m.nic}"
    out = [_base_chain(f, chain, "filter", "ingress", PORT_PRIORITY, "accept", dev=m.nic)]
    if m.allowed:
        out.append(_rule(f, chain, _match(_payload("ether", "saddr"), _set(list(m.allowed)), "!="), COUNTER, DROP))
    else:
        out.append(_rule(f, chain, COUNTER, DROP))
    return out


def _router_rules(pol: Policy) -> list[dict[str, Any]]:
    f = "inet"
    names = [p.name for p in pol.ports]
    out: list[dict[str, Any]] = [
        {"add": {"table": {"family": f, "name": TABLE}}},
        {"add": {"set": {"family": f, "table": TABLE, "name": "ports", "type": "ifname"}}},
    ]
    if names:
        out.append({"add": {"element": {"family": f, "table": TABLE, "name": "ports", "elem": names}}})
    from_port, to_port = _match(_meta("iifname"), "@ports"), _match(_meta("oifname"), "@ports")
    answers = _match({"ct": {"key": "state"}}, ["established", "related"], "in")
    out.append(_base_chain(f, "input", "filter", "input", FILTER_PRIORITY, "accept"))
    out.append(_rule(f, "input", from_port, answers, ACCEPT))
    for p in pol.ports:
        if p.subnet is not None:
            out.append(_rule(f, "input", _match(_meta("iifname"), p.name),
                             _match(_payload("ip", "daddr"), p.subnet.router),
                             _match(_payload("icmp", "type"), "echo-request"), ACCEPT))
    out.append(_rule(f, "input", from_port, COUNTER, DROP))
    out.append(_base_chain(f, "forward", "filter", "forward", FILTER_PRIORITY, "accept"))
    out.append(_rule(f, "forward", to_port, answers, ACCEPT))
    out.append(_rule(f, "forward", to_port, COUNTER, DROP))
    if pol.uplink:
        out.append(_rule(f, "forward", from_port, _match(_meta("oifname"), pol.uplink), COUNTER, DROP))
    out.append(_base_chain(f, "postrouting", "nat", "postrouting", NAT_PRIORITY, "accept"))
    for cidr in pol.masquerade:
        addr, length = cidr.split("/")
        source = {"prefix": {"addr": addr, "len": int(length)}}
        out.append(_rule(f, "postrouting", _match(_payload("ip", "saddr"), source),
                         _match(_meta("oifname"), "@ports", "!="), {"masquerade": None}))
    return out


def transaction(pol: Policy) -> list[dict[str, Any]]:
    """The commands that make cmld's tables of one namespace exactly `pol` (atomically)."""
    cmds = _fresh_table("inet") + _fresh_table("netdev")
    if pol.ports or pol.masquerade:
        cmds += _router_rules(pol)
    if pol.ports or pol.mac_filters:
        cmds.append({"add": {"table": {"family": "netdev", "name": TABLE}}})
        for p in pol.ports:
            cmds += _port_rules(p)
        for m in pol.mac_filters:
            cmds += _mac_filter_rules(m)
    return cmds


def removal() -> list[dict[str, Any]]:
    """The commands that remove cmld's tables (whether they exist or not)."""
    return _fresh_table("inet") + _fresh_table("netdev")
