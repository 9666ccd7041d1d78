"""Network attacks from inside the attacker containers (issue 15: deny by default between
partitions). Each container of the arena has the original's default veth `host0`, ending on the
router (in hosted mode: the namespace cmld runs in, a test-owned one). Every attack is judged by
what it achieved and by the router's own counters (the frame reached the router's port and was
dropped there), and is followed by the checks that the victim and the host are unaffected.

Controls first: a container reaches its own gateway, and the router reaches a container (the
one allowed flow into a partition)."""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from ..host.netlib import drops
from ..testnet import TestNetns
from . import frames
from .arena import Arena
from .conftest import Judge, modes
from .daemon import home_netns
from .guestos import PROGS

NETATK = "/tmp/netatk"


@dataclass
class Port:
    """A container's veth as both sides see it."""

    ip: str
    mac: str
    gateway: str
    router_port: str
    router_mac: str


def _ip_json(ns: TestNetns, *args: str) -> list[dict[str, object]]:
    return json.loads(ns.ip("-j", *args).stdout or "[]")  # type: ignore[no-any-return]


def port_of(arena: Arena, home: TestNetns, container: str) -> Port:
    r = arena.exec(container, "sh", "-c", "cat /sys/class/net/host0/address; ip -4 -o addr show host0")
    assert r.rc == 0, r.out + r.err
    lines = r.out.split("\n")
    own_mac = lines[0].strip()
    ip = lines[1].split()[3].split("/")[0]
    gateway = ip.rsplit(".", 1)[0] + ".1"
    for a in _ip_json(home, "-4", "addr"):
        if any(i.get("local") == gateway for i in a.get("addr_info", [])):  # type: ignore[attr-defined]
            link = _ip_json(home, "link", "show", str(a["ifname"]))[0]
            return Port(ip, own_mac, gateway, str(a["ifname"]), str(link["address"]))
    raise AssertionError(f"no router port with {gateway}")


@pytest.fixture(scope="module")
def net(arena: Arena, tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestNetns]:
    """cmld's namespace (the router), with netatk in both attackers."""
    out = tmp_path_factory.mktemp("netatk") / "netatk"
    subprocess.run(["gcc", "-static", "-O2", "-Wall", "-o", str(out), str(PROGS / "netatk.c")], check=True,
                   capture_output=True)
    for mode in arena.attackers:
        dst = Path(f"/proc/{arena.attacker_pid(mode)}/root{NETATK}")
        dst.write_bytes(out.read_bytes())
        dst.chmod(0o755)
    yield home_netns(arena.run_dir)


def send(arena: Arena, mode: str, frame: bytes, count: int = 5) -> None:
    r = arena.exec(arena.attackers[mode], NETATK, "host0", frame.hex(), str(count))
    assert r.rc == 0 and f"sent {count}" in r.out, r.out + r.err


def victim_ok(arena: Arena, home: TestNetns, victim: Port) -> None:
    """The victim still has its network: its gateway answers it, and the router reaches it with
    the victim's own MAC in its neighbour table."""
    assert arena.exec(arena.victim, "ping", "-c1", "-W3", victim.gateway).rc == 0
    assert home.run("busybox", "ping", "-c1", "-W3", victim.ip, check=False).returncode == 0
    neigh = _ip_json(home, "neigh", "show", victim.ip)
    assert neigh and neigh[0].get("lladdr") == victim.mac, neigh


# ---------------------------------------------------------------------- controls


@modes()
def test_control_net_own_gateway_and_router_to_container(arena: Arena, net: TestNetns, mode: str, judge: Judge,
                                                         unaffected: Callable[[], None]) -> None:
    me = port_of(arena, net, arena.attackers[mode])
    r = arena.exec(arena.attackers[mode], "ping", "-c1", "-W3", me.gateway)
    assert r.rc == 0, r.out + r.err
    assert net.run("busybox", "ping", "-c1", "-W3", me.ip, check=False).returncode == 0
    judge.control_ok(f"{me.ip} -> gateway {me.gateway} and router -> {me.ip} answer")
    unaffected()


# ---------------------------------------------------------------------- flows between partitions


@modes()
def test_disclosure_net_other_container(arena: Arena, net: TestNetns, mode: str, judge: Judge,
                                        unaffected: Callable[[], None]) -> None:
    """The attacker pings the victim, connects to a port the victim listens on, and tries the
    victim's gateway address."""
    victim = port_of(arena, net, arena.victim)
    arena.exec(arena.victim, "sh", "-c", "rm -f /tmp/got; (sleep 20 | nc -l -p 7001 >/tmp/got 2>/dev/null) "
               ">/dev/null 2>&1 </dev/null & sleep 0.3")
    atk = arena.attackers[mode]
    ping = arena.exec(atk, "ping", "-c1", "-W2", victim.ip)
    arena.exec(atk, "sh", "-c", f"echo stolen | nc -w 2 {victim.ip} 7001")
    gw = arena.exec(atk, "ping", "-c1", "-W2", victim.gateway)
    got = arena.exec(arena.victim, "cat", "/tmp/got").out
    if ping.rc == 0 or "stolen" in got or gw.rc == 0:
        judge.succeeded(f"ping {ping.rc}, tcp data at victim {got!r}, victim gateway ping {gw.rc}")
    judge.blocked(f"ping {victim.ip}, tcp {victim.ip}:7001 and {victim.gateway} unreachable")
    victim_ok(arena, net, victim)
    unaffected()


@modes()
def test_disclosure_net_router_services(arena: Arena, net: TestNetns, mode: str, judge: Judge,
                                        unaffected: Callable[[], None]) -> None:
    """A service of the router (the CML in hosted mode, c0 on a device) listening on every
    address: not for containers, which reach only their gateway's ICMP echo."""
    me = port_of(arena, net, arena.attackers[mode])
    srv = net.popen("busybox", "nc", "-l", "-p", "9100", "-e", "echo", "router-secret")
    try:
        time.sleep(0.3)
        r = arena.exec(arena.attackers[mode], "sh", "-c", f"nc -w 2 {me.gateway} 9100 </dev/null")
        if "router-secret" in r.out:
            judge.succeeded(f"read {r.out.strip()!r} from {me.gateway}:9100")
        judge.blocked(f"{me.gateway}:9100 refused to the container")
        # the service itself is fine
        assert "router-secret" in net.run("busybox", "nc", "-w", "2", "127.0.0.1", "9100").stdout
    finally:
        srv.kill()
        srv.wait()
    unaffected()


# ---------------------------------------------------------------------- spoofing


def spoof(arena: Arena, net: TestNetns, mode: str, judge: Judge, what: str,
          make: Callable[[Port, Port], bytes], check: Callable[[Port], str]) -> None:
    """Send `make(me, victim)` five times; blocked when the router's port dropped them and
    `check` finds no effect ("" = none, else what happened)."""
    me, victim = port_of(arena, net, arena.attackers[mode]), port_of(arena, net, arena.victim)
    victim_ok(arena, net, victim)  # the router knows the victim first
    before = drops(net.path, f"in_{me.router_port}")
    send(arena, mode, make(me, victim))
    time.sleep(0.3)
    dropped = drops(net.path, f"in_{me.router_port}") - before
    effect = check(victim)
    if effect:
        judge.succeeded(f"{what}: {effect}")
    if dropped < 5:
        raise AssertionError(f"{what}: only {dropped} of 5 frames counted as dropped on {me.router_port}")
    judge.blocked(f"{what}: {dropped} frames dropped on the router's port {me.router_port}")
    victim_ok(arena, net, victim)


def neigh_poisoned(net: TestNetns) -> Callable[[Port], str]:
    def check(victim: Port) -> str:
        n = _ip_json(net, "neigh", "show", victim.ip)
        return f"router maps {victim.ip} to {n[0].get('lladdr')}" if n and n[0].get("lladdr") != victim.mac else ""
    return check


@modes()
def test_modification_net_arp_spoof(arena: Arena, net: TestNetns, mode: str, judge: Judge,
                                    unaffected: Callable[[], None]) -> None:
    """Gratuitous ARP from the attacker's own MAC claiming the victim's address."""
    spoof(arena, net, mode, judge, "ARP claiming the victim's address",
          lambda me, v: frames.arp_reply(me.mac, v.ip), neigh_poisoned(net))
    unaffected()


@modes()
def test_modification_net_ip_source_spoof(arena: Arena, net: TestNetns, mode: str, judge: Judge,
                                          unaffected: Callable[[], None]) -> None:
    """IPv4 with the victim's address as source, through the router."""
    spoof(arena, net, mode, judge, "IPv4 from the victim's address",
          lambda me, v: frames.ipv4_udp(me.router_mac, me.mac, v.ip, "198.51.100.9"), neigh_poisoned(net))
    unaffected()


@modes()
def test_modification_net_mac_spoof(arena: Arena, net: TestNetns, mode: str, judge: Judge,
                                    unaffected: Callable[[], None]) -> None:
    """Frames with the victim's MAC as source."""
    spoof(arena, net, mode, judge, "frames from the victim's MAC",
          lambda me, v: frames.ipv4_udp(me.router_mac, v.mac, me.ip, me.gateway), neigh_poisoned(net))
    unaffected()


@modes()
def test_modification_net_ipv6_router_advert(arena: Arena, net: TestNetns, mode: str, judge: Judge,
                                             unaffected: Callable[[], None]) -> None:
    """An IPv6 router advertisement with a prefix: the router must not take it."""
    def learned(_: Port) -> str:
        routes = net.ip("-6", "route").stdout
        return f"router learned {routes!r}" if "2001:db8:1" in routes else ""
    spoof(arena, net, mode, judge, "IPv6 router advertisement", lambda me, v: frames.router_advert(me.mac), learned)
    unaffected()


@modes()
def test_modification_net_ipv6_neighbor_advert(arena: Arena, net: TestNetns, mode: str, judge: Judge,
                                               unaffected: Callable[[], None]) -> None:
    """An unsolicited IPv6 neighbour advertisement for an address of the router's network."""
    def learned(_: Port) -> str:
        n = net.ip("-6", "neigh").stdout
        return f"router learned {n!r}" if "fe80::bad" in n else ""
    spoof(arena, net, mode, judge, "IPv6 neighbour advertisement",
          lambda me, v: frames.neighbor_advert(me.mac, "fe80::bad"), learned)
    unaffected()
