"""The original's addressing plan, as pure functions: one /24 per virtual interface.

Interface offset n (0..254, the first free one) gives the pair `r_<n>` (router side) / `c_<n>`,
with 172.23.n.1/24 on the router side and 172.23.n.2/24 in the container, broadcast 172.23.n.255.
MACs are parsed as the original does (six hex pairs separated by ':'; trailing text, which its
sscanf ignores, is refused here); a veth MAC is
made unicast and locally administered, as the kernel wants.
"""

from __future__ import annotations

import ipaddress
import os
import re
from dataclasses import dataclass

MAX_OFFSETS = 255  # 172.23.0.0/24 .. 172.23.254.0/24
PREFIX = 24
IFNAMSIZ = 15  # usable characters of an interface name
_MAC = re.compile(r"^" + ":".join([r"([0-9a-fA-F]{1,2})"] * 6) + r"$")
_IFNAME = re.compile(r"^[^/\s:]{1,15}$")


@dataclass(frozen=True)
class Subnet:
    offset: int

    @property
    def router(self) -> str:
        return f"172.23.{self.offset}.1"

    @property
    def container(self) -> str:
        return f"172.23.{self.offset}.2"

    @property
    def broadcast(self) -> str:
        return f"172.23.{self.offset}.255"

    @property
    def cidr(self) -> str:
        return f"172.23.{self.offset}.0/{PREFIX}"


def parse_mac(text: str) -> bytes | None:
    """Six bytes, or None if `text` is not a MAC address."""
    m = _MAC.match(text.strip())
    if m is None:
        return None
    return bytes(int(g, 16) for g in m.groups())


def format_mac(mac: bytes) -> str:
    return ":".join(f"{b:02x}" for b in mac)


def sanitize_mac(mac: bytes) -> bytes:
    """Unicast, locally administered (the original does the same before using a veth MAC)."""
    return bytes([(mac[0] & 0xFE) | 0x02]) + mac[1:]


def random_mac() -> bytes:
    return sanitize_mac(os.urandom(6))


def veth_mac(configured: str) -> bytes:
    """The container-side MAC of a vnet: the configured one (sanitized) or a random one. A MAC
    the original cannot parse is replaced by a random one there too (it only warns)."""
    mac = parse_mac(configured) if configured else None
    return sanitize_mac(mac) if mac is not None else random_mac()


def valid_ifname(name: str) -> bool:
    return bool(_IFNAME.match(name)) and name not in (".", "..")


def is_ipv4(text: str) -> bool:
    try:
        ipaddress.IPv4Address(text)
    except ValueError:
        return False
    return True


class OffsetPool:
    """The global offsets (the original's address_offsets): the first free one is taken."""

    def __init__(self) -> None:
        self._used: set[int] = set()

    def take(self, skip: frozenset[int] = frozenset()) -> int | None:
        for n in range(MAX_OFFSETS):
            if n not in self._used and n not in skip:
                self._used.add(n)
                return n
        return None

    def release(self, n: int) -> None:
        self._used.discard(n)

    @property
    def used(self) -> frozenset[int]:
        return frozenset(self._used)
