"""Physical network interfaces: which there are, who holds each, and the names they keep.

As the original's phys list, NICs are tracked by MAC: free ones sit in cmld's namespace, c0
takes every free one when it starts (device mode), a container takes those its config or an
`assign_iface` names. A NIC is physical when it has no link kind (real hardware: a PCI or USB
device, virtio in a VM) or when its kind is one cmld was told to treat as hardware
(`--nic-kinds`, for tests and VMs whose "NICs" are veths); links cmld makes itself never count.

Names: in device mode NICs are renamed `cmleth<N>` / `cmlwlan<N>` once, the first name seen
per MAC is kept (the original's hotplug), and a NIC coming back from a container gets it again.
"""

from __future__ import annotations

import logging

from cmld.net.addressing import format_mac, parse_mac
from cmld.net.journal import Journal
from cmld.net.rtnl import ARPHRD_ETHER, Link

log = logging.getLogger(__name__)


def normal_mac(text: str) -> str | None:
    mac = parse_mac(text)
    return format_mac(mac) if mac is not None else None


class NicRegistry:
    def __init__(self, journal: Journal, kinds: frozenset[str]) -> None:
        self.journal = journal
        self.kinds = kinds
        self.free: list[str] = []  # MACs, in the order they were found
        self.holder: dict[str, str] = {}  # MAC -> uuid of the container holding it
        self._eth = 0
        self._wlan = 0

    def is_physical(self, lk: Link) -> bool:
        if lk.name == "lo" or lk.name in self.journal.links or not lk.mac:
            return False
        if lk.kind:
            return lk.kind in self.kinds
        return lk.link_type == ARPHRD_ETHER

    def scan(self, links: list[Link]) -> list[Link]:
        """Physical links of cmld's namespace not yet tracked become free; returns them."""
        found = []
        for lk in links:
            mac = lk.mac.lower()
            if self.is_physical(lk) and mac not in self.free and mac not in self.holder:
                self.free.append(mac)
                found.append(lk)
        return found

    def known_name(self, mac: str) -> str | None:
        return self.journal.nic_names.get(mac)

    def mac_of_known_name(self, name: str) -> str | None:
        return next((m for m, n in self.journal.nic_names.items() if n == name), None)

    def remember(self, mac: str, name: str) -> None:
        """The first name seen for a MAC stays its name."""
        if mac not in self.journal.nic_names:
            self.journal.remember_nic(mac, name)

    def device_name(self, lk: Link, wireless: bool = False) -> str:
        """The `cml` name a NIC gets in device mode: its known one, its own if it already has the
        prefix, else the next `cmleth<N>` / `cmlwlan<N>` (the original's hotplug rename)."""
        known = self.known_name(lk.mac.lower())
        if known:
            return known
        if lk.name.startswith("cml"):
            return lk.name
        taken = set(self.journal.nic_names.values())
        while True:
            if wireless:
                name, self._wlan = f"cmlwlan{self._wlan}", self._wlan + 1
            else:
                name, self._eth = f"cmleth{self._eth}", self._eth + 1
            if name not in taken:
                return name

    def claim(self, mac: str, owner: str) -> bool:
        """Take a free NIC, or one c0 holds when `from_c0` is its holder; False if another
        container holds it or cmld does not know it."""
        holder = self.holder.get(mac)
        if holder is not None and holder != owner:
            return False
        if mac in self.free:
            self.free.remove(mac)
        elif holder is None:
            return False
        self.holder[mac] = owner
        return True

    def hand_over(self, mac: str, owner: str) -> None:
        """A NIC moves from its holder (c0) to `owner`."""
        self.holder[mac] = owner

    def release(self, mac: str) -> None:
        """The NIC is back in cmld's namespace."""
        self.holder.pop(mac, None)
        if mac not in self.free:
            self.free.append(mac)

    def held_by(self, owner: str) -> list[str]:
        return [m for m, o in self.holder.items() if o == owner]
