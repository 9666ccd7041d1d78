"""Exceptions to deny-by-default between partitions (`net_allow` in a container's config).

The partition firewall (`firewall.py`) drops container -> container, container -> the router's
own services (c0's on a device, the CML's in hosted mode) and container -> the CML through c0's
uplink. A container whose config lists `net_allow { container: "b" port: 8080 }` (or
`cml: true`) may open exactly those connections: the router's `allowed` set gets one element
per (the container's port on the router, the target's address, protocol, port), and the answers
pass as any answer does (conntrack). The original has no such field (its cmld filters nothing
between partitions); it is this implementation's, in the container config, so a signed config
is what grants it when device.conf has signed_configs.

The set is recomputed from every running container each time one's network comes or goes, so
an allow naming a container that is not running (yet) takes effect when it starts and ends
when it stops, whichever of the two starts first.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from cml_common.messages.container_pb2 import ContainerNetAllow
from cmld.net.addressing import Subnet

PROTOCOLS = ("tcp", "udp")


class AllowInvalid(ValueError):
    """A `net_allow` entry that cannot be meant (the config is refused with this message)."""


@dataclass(frozen=True)
class Allow:
    container: str  # "" when cml
    cml: bool
    port: int
    protocol: str


def parse(entries: Iterable[ContainerNetAllow]) -> list[Allow]:
    out: list[Allow] = []
    for i, e in enumerate(entries):
        where = f"net_allow[{i}]"
        has_container = e.HasField("container") and e.container != ""
        if has_container == bool(e.cml):
            raise AllowInvalid(f"{where}: name exactly one target, either container: \"<name>\" or cml: true")
        if not 1 <= e.port <= 65535:
            raise AllowInvalid(f"{where}: port {e.port} is not in 1..65535")
        if e.protocol not in PROTOCOLS:
            raise AllowInvalid(f"{where}: protocol {e.protocol!r} is not one of {', '.join(PROTOCOLS)}")
        out.append(Allow(e.container if has_container else "", bool(e.cml), e.port, e.protocol))
    return out


@dataclass(frozen=True)
class Member:
    """A running container as the allow set sees it: its name, its ports on the router (name and
    subnet; unconfigured ports have no address of cmld's and are never a source or target) and
    what its config allows it."""

    name: str
    is_router: bool  # c0 on a device: its services are its address on each container's link
    ports: tuple[tuple[str, Subnet | None], ...]
    allows: tuple[Allow, ...]


Element = tuple[str, str, str, int]  # router-side port of the source, target address, protocol, port


def elements(members: Iterable[Member], cml_address: str | None) -> list[Element]:
    """The `allowed` set of the router. `cml_address`: where the CML is reached through the router
    (its uplink address on a device); None in hosted mode, where the router *is* the CML and its
    services are its address on each container's link."""
    ms = list(members)
    by_name = {m.name: m for m in ms}
    out: set[Element] = set()
    for m in ms:
        for a in m.allows:
            for port, sub in m.ports:
                if sub is None:
                    continue
                targets: list[str] = []
                if a.cml:
                    targets = [cml_address] if cml_address else [sub.router]
                elif a.container != m.name and a.container in by_name:
                    target = by_name[a.container]
                    if target.is_router:
                        targets = [sub.router]
                    else:
                        targets = [s.container for _, s in target.ports if s is not None]
                for addr in targets:
                    out.add((port, addr, a.protocol, a.port))
    return sorted(out)
