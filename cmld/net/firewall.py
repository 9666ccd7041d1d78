"""The partition firewall as nftables JSON: a fixed base per namespace, and small transactions
that add or remove one container's part (set elements and a per-port chain), so a start never
rebuilds, re-hooks or waits for what other containers have.

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
  going out, is forwarded and masqueraded. The exceptions a container's config grants
  (`net_allow`, allow.py) are the elements of the set `allowed`: (its port, target address,
  protocol, port), accepted before those drops.

A physical NIC bridged with a MAC allow-list (`net_ifaces { mac_filter }`) gets an ingress chain
that drops frames from other source MACs (the original's physdev/mac iptables rules).

The tables are cmld's alone (`cmld`, in each family): base chains whose policy is accept leave
everyone else's traffic alone, and removing them never touches anyone else's rules.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from cmld.net.addressing import Subnet

TABLE = "cmld"
PORT_PRIORITY = -500  # before anything else on the device
FILTER_PRIORITY = -10  # before the usual filter chains (0)
NAT_PRIORITY = 100  # srcnat
Cmd = dict[str, Any]


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


# ---------------------------------------------------------------------- expression helpers


def _match(left: dict[str, Any], right: Any, op: str = "==") -> Cmd:
    return {"match": {"op": op, "left": left, "right": right}}


def _meta(key: str) -> Cmd:
    return {"meta": {"key": key}}


def _payload(protocol: str, fld: str) -> Cmd:
    return {"payload": {"protocol": protocol, "field": fld}}


def _prefix(cidr: str) -> Cmd:
    addr, length = cidr.split("/")
    return {"prefix": {"addr": addr, "len": int(length)}}


# (router-side port of the source, destination address, protocol, destination port)
ALLOWED_TYPE = ("ifname", "ipv4_addr", "inet_proto", "inet_service")
ACCEPT: Cmd = {"accept": None}
DROP: Cmd = {"drop": None}
COUNTER: Cmd = {"counter": None}


def _rule(family: str, chain: str, *expr: Cmd) -> Cmd:
    return {"add": {"rule": {"family": family, "table": TABLE, "chain": chain, "expr": list(expr)}}}


def _base_chain(family: str, name: str, kind: str, hook: str, prio: int, policy: str, dev: str = "") -> Cmd:
    chain: dict[str, Any] = {"family": family, "table": TABLE, "name": name, "type": kind, "hook": hook,
                             "prio": prio, "policy": policy}
    if dev:
        chain["dev"] = dev
    return {"add": {"chain": chain}}


def _set(name: str, kind: Any, flags: list[str] | None = None) -> Cmd:
    s: dict[str, Any] = {"family": "inet", "table": TABLE, "name": name, "type": kind}
    if flags:
        s["flags"] = flags
    return {"add": {"set": s}}


def _elements(verb: str, name: str, elems: list[Any]) -> Cmd:
    return {verb: {"element": {"family": "inet", "table": TABLE, "name": name, "elem": elems}}}


def port_chain(port: str) -> str:
    return f"in_{port}"


def mac_filter_chain(nic: str) -> str:
    return f"macf_{nic}"


# ---------------------------------------------------------------------- the base


def base() -> list[Cmd]:
    """cmld's tables in one namespace, with the rules every port shares (made once)."""
    f = "inet"
    from_port, to_port = _match(_meta("iifname"), "@ports"), _match(_meta("oifname"), "@ports")
    answers = _match({"ct": {"key": "state"}}, ["established", "related"], "in")
    allowed = _match({"concat": [_meta("iifname"), _payload("ip", "daddr"), _meta("l4proto"),
                                 _payload("th", "dport")]}, "@allowed")
    return [
        {"add": {"table": {"family": f, "name": TABLE}}},
        {"add": {"table": {"family": "netdev", "name": TABLE}}},
        _set("ports", "ifname"),
        _set("uplinks", "ifname"),
        _set("gateways", ["ifname", "ipv4_addr"]),
        _set("masquerade", "ipv4_addr", ["interval"]),
        _set("allowed", list(ALLOWED_TYPE)),
        _base_chain(f, "input", "filter", "input", FILTER_PRIORITY, "accept"),
        _rule(f, "input", from_port, answers, ACCEPT),
        _rule(f, "input", {"match": {"op": "==", "left": {"concat": [_meta("iifname"), _payload("ip", "daddr")]},
                                     "right": "@gateways"}},
              _match(_payload("icmp", "type"), "echo-request"), ACCEPT),
        _rule(f, "input", from_port, allowed, ACCEPT),
        _rule(f, "input", from_port, COUNTER, DROP),
        _base_chain(f, "forward", "filter", "forward", FILTER_PRIORITY, "accept"),
        _rule(f, "forward", to_port, answers, ACCEPT),
        _rule(f, "forward", from_port, allowed, ACCEPT),
        _rule(f, "forward", to_port, COUNTER, DROP),
        _rule(f, "forward", from_port, _match(_meta("oifname"), "@uplinks"), COUNTER, DROP),
        _base_chain(f, "postrouting", "nat", "postrouting", NAT_PRIORITY, "accept"),
        _rule(f, "postrouting", _match(_payload("ip", "saddr"), "@masquerade"),
              _match(_meta("oifname"), "@ports", "!="), {"masquerade": None}),
    ]


def removal() -> list[Cmd]:
    """Remove cmld's tables whether they exist or not (add-then-delete)."""
    out: list[Cmd] = []
    for family in ("inet", "netdev"):
        table = {"family": family, "name": TABLE}
        out += [{"add": {"table": table}}, {"delete": {"table": table}}]
    return out


# ---------------------------------------------------------------------- one container's part


def port_add(p: Port) -> list[Cmd]:
    f, chain = "netdev", port_chain(p.name)
    out = [_elements("add", "ports", [p.name]),
           _base_chain(f, chain, "filter", "ingress", PORT_PRIORITY, "drop", dev=p.name)]
    own_mac = _match(_payload("ether", "saddr"), p.mac)
    if p.subnet is not None:
        out.append(_elements("add", "gateways", [{"concat": [p.name, p.subnet.router]}]))
        out.append(_rule(f, chain, own_mac, _match(_payload("ether", "type"), "arp"),
                         _match(_payload("arp", "saddr ether"), p.mac),
                         _match(_payload("arp", "saddr ip"), p.subnet.container), ACCEPT))
        out.append(_rule(f, chain, own_mac, _match(_payload("ether", "type"), "ip"),
                         _match(_payload("ip", "saddr"), p.subnet.container), ACCEPT))
    else:
        out.append(_rule(f, chain, own_mac, _match(_payload("ether", "type"), "ip6"),
                         _match(_payload("icmpv6", "type"), {"set": ["nd-router-advert", "nd-redirect"]}),
                         COUNTER, DROP))
        out.append(_rule(f, chain, own_mac, _match(_payload("ether", "type"), "arp"),
                         _match(_payload("arp", "saddr ether"), p.mac), ACCEPT))
        out.append(_rule(f, chain, own_mac, _match(_payload("ether", "type"), "arp", "!="), ACCEPT))
    out.append(_rule(f, chain, COUNTER, DROP))
    return out


def port_del(p: Port) -> list[Cmd]:
    """The port's set elements (its chain goes with `chain_del`, or with the device)."""
    out = [_elements("delete", "ports", [p.name])]
    if p.subnet is not None:
        out.append(_elements("delete", "gateways", [{"concat": [p.name, p.subnet.router]}]))
    return out


def masquerade(verb: str, cidrs: list[str]) -> list[Cmd]:
    return [_elements(verb, "masquerade", [_prefix(c) for c in cidrs])] if cidrs else []


def allowed_replace(elems: list[tuple[str, str, str, int]]) -> list[Cmd]:
    """The whole `allowed` set (allow.py), replaced in one transaction."""
    out: list[Cmd] = [{"flush": {"set": {"family": "inet", "table": TABLE, "name": "allowed"}}}]
    if elems:
        out.append(_elements("add", "allowed", [{"concat": list(e)} for e in elems]))
    return out


def uplink(verb: str, name: str) -> list[Cmd]:
    return [_elements(verb, "uplinks", [name])]


def mac_filter_add(m: MacFilter) -> list[Cmd]:
    f, chain = "netdev", mac_filter_chain(m.nic)
    out = [_base_chain(f, chain, "filter", "ingress", PORT_PRIORITY, "accept", dev=m.nic)]
    if m.allowed:
        allowed: Any = m.allowed[0] if len(m.allowed) == 1 else {"set": list(m.allowed)}
        out.append(_rule(f, chain, _match(_payload("ether", "saddr"), allowed, "!="), COUNTER, DROP))
    else:
        out.append(_rule(f, chain, COUNTER, DROP))
    return out


def chain_del(chain: str) -> list[Cmd]:
    return [{"delete": {"chain": {"family": "netdev", "table": TABLE, "name": chain}}}]
