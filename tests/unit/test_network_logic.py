"""The pure parts of cmld's networking: the addressing plan, MAC parsing as the original does it,
the firewall's nftables JSON, `ip link` rendering, the NIC registry and the crash journal."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from cmld.net import firewall, iplink
from cmld.net.addressing import OffsetPool, Subnet, format_mac, parse_mac, sanitize_mac, valid_ifname, veth_mac
from cmld.net.journal import Journal
from cmld.net.nics import NicRegistry, normal_mac
from cmld.net.rtnl import Link

pytestmark = pytest.mark.unit


@pytest.mark.parametrize("text,want", [
    ("00:00:00:00:00:11", "00:00:00:00:00:11"),
    ("AA:bb:cC:1:2:3", "aa:bb:cc:01:02:03"),
    (" 02:00:00:00:00:01 ", "02:00:00:00:00:01"),
    ("AA:AA::AA:AA:AA", None),  # the original CI's malformed mac_filter entry: skipped, as there
    ("00-00-00-00-00-11", None),  # the original's sscanf takes ':' only
    ("00:00:00:00:00:11:22", None),
    ("00:00:00:00:00:1g", None),
    ("eth0", None),
    ("", None),
])
def test_mac_parsing(text: str, want: str | None) -> None:
    mac = parse_mac(text)
    assert (format_mac(mac) if mac else None) == want
    assert normal_mac(text) == want


def test_veth_macs_are_unicast_and_local() -> None:
    assert sanitize_mac(bytes.fromhex("030000000b01")) == bytes.fromhex("020000000b01")
    assert veth_mac("03:00:00:00:0b:01") == bytes.fromhex("020000000b01")
    for _ in range(50):
        m = veth_mac("")
        assert m[0] & 1 == 0 and m[0] & 2 == 2
    assert veth_mac("not a mac")[0] & 3 == 2  # the original warns and uses a random one


def test_subnets_and_offsets() -> None:
    s = Subnet(7)
    assert (s.router, s.container, s.broadcast, s.cidr) == ("172.23.7.1", "172.23.7.2", "172.23.7.255",
                                                             "172.23.7.0/24")
    pool = OffsetPool()
    assert [pool.take() for _ in range(3)] == [0, 1, 2]
    pool.release(1)
    assert pool.take() == 1
    assert pool.take(frozenset({3, 4})) == 5
    for _ in range(255 - 4):  # 3 and 4 were only skipped once
        assert pool.take() is not None
    assert pool.take() is None


@pytest.mark.parametrize("name,ok", [("eth0", True), ("r_254", True), ("a" * 15, True), ("a" * 16, False),
                                     ("", False), ("a/b", False), ("a b", False), ("a:1", False), ("..", False)])
def test_interface_names(name: str, ok: bool) -> None:
    assert valid_ifname(name) is ok


def _rules(cmds: list[firewall.Cmd], chain: str) -> list[list[dict[str, object]]]:
    return [c["add"]["rule"]["expr"] for c in cmds if "rule" in c.get("add", {}) and c["add"]["rule"]["chain"] == chain]


def test_port_chain_drops_all_but_own_mac_and_address() -> None:
    p = firewall.Port("r_3", "02:00:00:00:00:03", Subnet(3))
    cmds = firewall.port_add(p)
    chain = next(c["add"]["chain"] for c in cmds if "chain" in c.get("add", {}))
    assert (chain["family"], chain["hook"], chain["dev"], chain["policy"]) == ("netdev", "ingress", "r_3", "drop")
    text = json.dumps(cmds)
    assert '"172.23.3.2"' in text and '"02:00:00:00:00:03"' in text and '"ip6"' not in text
    accepts = [r for r in _rules(cmds, "in_r_3") if {"accept": None} in r]
    assert len(accepts) == 2  # own ARP, own IPv4: nothing else
    for r in accepts:
        assert {"match": {"op": "==", "left": {"payload": {"protocol": "ether", "field": "saddr"}},
                          "right": "02:00:00:00:00:03"}} in r
    assert {"concat": ["r_3", "172.23.3.1"]} in json.loads(text)[2]["add"]["element"]["elem"]
    manual = json.dumps(firewall.port_add(firewall.Port("r_4", "02:00:00:00:00:04", None)))
    assert "nd-router-advert" in manual and "172.23" not in manual


def test_base_leaves_other_traffic_alone() -> None:
    base = firewall.base()
    for c in base:
        chain = c.get("add", {}).get("chain")
        if chain:
            assert chain["policy"] == "accept" and chain["table"] == "cmld"
    # every drop in the base is about cmld's ports
    for r in (e for c in base if "rule" in c.get("add", {}) for e in [c["add"]["rule"]["expr"]]):
        if {"drop": None} in r:
            assert "@ports" in json.dumps(r)
    assert {"delete": {"table": {"family": "inet", "name": "cmld"}}} in firewall.removal()


def test_mac_filter_chain() -> None:
    one = json.dumps(firewall.mac_filter_add(firewall.MacFilter("cmleth2", ("00:00:00:00:00:14",))))
    assert '"op": "!="' in one and '"00:00:00:00:00:14"' in one
    none_valid = firewall.mac_filter_add(firewall.MacFilter("cmleth2", ()))
    assert _rules(none_valid, "macf_cmleth2") == [[{"counter": None}, {"drop": None}]]


def _link(index: int, name: str, **kw: object) -> Link:
    base: dict[str, object] = {"kind": "veth", "mac": "02:00:00:00:0b:01", "flags": 0x11043, "link_type": 1,
                               "mtu": 1500, "operstate": "UP", "qdisc": "noqueue", "broadcast": "ff:ff:ff:ff:ff:ff",
                               "txqlen": 1000}
    base.update(kw)
    return Link(index, name, **base)  # type: ignore[arg-type]


def test_ip_link_blocks_as_iproute2_prints_them() -> None:
    lo = _link(1, "lo", kind="", mac="00:00:00:00:00:00", flags=0x10049, link_type=772, mtu=65536,
               operstate="UNKNOWN", broadcast="00:00:00:00:00:00")
    eth0 = _link(2, "eth0", peer=4, peer_netnsid=0)
    eth1 = _link(3, "eth1", flags=0x1002, operstate="DOWN", qdisc="noop", peer=5, peer_netnsid=0,
                 mac="f2:61:b7:f7:f9:78")
    blocks = iplink.blocks([eth1, lo, eth0])
    assert blocks == [
        "1: lo: <LOOPBACK,UP,LOWER_UP> mtu 65536 qdisc noqueue state UNKNOWN mode DEFAULT group default "
        "qlen 1000\n    link/loopback 00:00:00:00:00:00 brd 00:00:00:00:00:00\n",
        "2: eth0@if4: <BROADCAST,MULTICAST,UP,LOWER_UP> mtu 1500 qdisc noqueue state UP mode DEFAULT group "
        "default qlen 1000\n    link/ether 02:00:00:00:0b:01 brd ff:ff:ff:ff:ff:ff link-netnsid 0\n",
        "3: eth1@if5: <BROADCAST,MULTICAST> mtu 1500 qdisc noop state DOWN mode DEFAULT group default qlen 1000"
        "\n    link/ether f2:61:b7:f7:f9:78 brd ff:ff:ff:ff:ff:ff link-netnsid 0\n",
    ]
    # a veth whose peer is here and down; a bridge port
    a, b = _link(7, "a", peer=8, flags=0x1003), _link(8, "b", peer=7, flags=0x1002)
    assert iplink.block(a, {7: a, 8: b}).startswith("7: a@b: <NO-CARRIER,BROADCAST,MULTICAST,UP,M-DOWN> ")
    port = _link(9, "cmleth2", kind="", master=10)
    assert " master br_cmleth2 " in iplink.block(port, {10: _link(10, "br_cmleth2", kind="bridge")})


def test_nic_registry(tmp_path: Path) -> None:
    j = Journal(tmp_path / "net.json")
    j.add_link("r_0", "veth")
    nics = NicRegistry(j, frozenset({"veth"}))
    found = nics.scan([_link(1, "lo", kind="", link_type=772), _link(2, "ext0", mac="02:00:00:00:00:aa"),
                       _link(3, "r_0"), _link(4, "eth9", kind="", mac="02:00:00:00:00:bb"),
                       _link(5, "br0", kind="bridge", mac="02:00:00:00:00:cc")])
    assert [lk.name for lk in found] == ["ext0", "eth9"]  # not lo, not cmld's own r_0, not a bridge
    assert nics.free == ["02:00:00:00:00:aa", "02:00:00:00:00:bb"]
    assert nics.claim("02:00:00:00:00:aa", "c1") and not nics.claim("02:00:00:00:00:aa", "c2")
    assert not nics.claim("02:00:00:00:00:ff", "c1")  # unknown
    nics.release("02:00:00:00:00:aa")
    assert nics.claim("02:00:00:00:00:aa", "c2")
    # device names: cml<kind><N>, the first name per MAC kept
    assert nics.device_name(found[0]) == "cmleth0"
    nics.remember("02:00:00:00:00:aa", "cmleth0")
    assert nics.device_name(found[0]) == "cmleth0" and nics.device_name(found[1]) == "cmleth1"
    assert nics.mac_of_known_name("cmleth0") == "02:00:00:00:00:aa"


def test_journal_survives_garbage(tmp_path: Path) -> None:
    p = tmp_path / "net.json"
    j = Journal(p)
    j.add_link("br_x", "bridge")
    j.set_tables(True)
    j2 = Journal(p)
    j2.load()
    assert j2.links == {"br_x": "bridge"} and j2.tables
    for junk in (b"", b"{", b"[]", b'{"links": 5}', b"\xff\xfe"):
        p.write_bytes(junk)
        j3 = Journal(p)
        j3.load()  # logs and starts empty, never raises
        assert j3.links == {} or isinstance(j3.links, dict)
