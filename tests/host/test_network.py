"""Container networking on this host, always inside test-owned network namespaces (cmld runs in
one with `--netns`; "outside" is another, reached over a veth): the original's veth topology,
routing and NAT, `ifaces`, the partition firewall's basic denials, clean-up after stop, failed
starts and `kill -9`. Device mode (c0 as the router, the CML uplink, NIC assignment):
test_network_c0.py; attacks from inside containers: tests/attack/test_network.py."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import time
from pathlib import Path

import pytest

from ..conftest import DaemonFactory, cli, is_root
from ..testnet import TestNetns, root_snapshot, veth_between
from .containers import install_guestos, start, uuid_of, wait_state
from .netlib import (
    HOME_ADDR,
    MARK,
    WORLD_ADDR,
    addrs,
    cmld_tables,
    create,
    default_route,
    fetch,
    http_server,
    links,
    sh,
    vnet,
)

pytestmark = [pytest.mark.host, pytest.mark.skipif(not is_root(), reason="needs root")]


def subnet_of(addresses: list[str]) -> int:
    """n of 172.23.n.2/24."""
    (a,) = [x for x in addresses if x.startswith("172.23.")]
    return int(a.split(".")[2])


def test_hosted_topology_routing_and_denials(cmld_factory: DaemonFactory, guestos_src: Path) -> None:
    before = root_snapshot()
    home = cmld_factory.cmld_netns()
    world = TestNetns("cmlw")
    server = None
    try:
        veth_between(home, "ext0", world, "wan0", a_addr=f"{HOME_ADDR}/24", b_addr=f"{WORLD_ADDR}/24")
        server = http_server(world, cmld_factory.tmp / "www")
        base = cmld_factory.tmp / "cmld-base"
        base.mkdir()
        install_guestos(guestos_src, base)
        d = cmld_factory.start("--stop-timeout", "10", base=base)
        create(d, cmld_factory.tmp, "a")  # the original's default: one `host0`, configured
        create(d, cmld_factory.tmp, "b", vnet("eth0", rootns="vb0", mac="03:00:00:00:0b:01")
               + vnet("eth1", configure=False))
        for c in ("a", "b"):
            assert start(d, c).rc == 0
        for c in ("a", "b"):
            wait_state(d, c, "RUNNING", timeout=30)
        ua, ub = uuid_of(d, "a"), uuid_of(d, "b")

        # a: host0 with 172.23.n.2/24, default route via .1; the router end r_n in cmld's netns
        a_addrs = addrs(ua)
        n = subnet_of(a_addrs["host0"])
        assert a_addrs["host0"] == [f"172.23.{n}.2/24"]
        assert default_route(ua) == f"172.23.{n}.1"
        home_links, home_addrs = links(home.name), addrs(home.name)
        assert home_addrs[f"r_{n}"] == [f"172.23.{n}.1/24"]
        assert home_links[f"r_{n}"]["linkinfo"]["info_kind"] == "veth"
        # b: eth0 with the configured MAC (multicast bit cleared, local bit set, as the original),
        # its router end renamed to if_rootns_name; eth1 left unconfigured and down
        b_links, b_addrs = links(ub), addrs(ub)
        assert b_links["eth0"]["address"] == "02:00:00:00:0b:01"
        m = subnet_of(b_addrs["eth0"])
        assert addrs(home.name)["vb0"] == [f"172.23.{m}.1/24"]
        assert "UP" not in b_links["eth1"]["flags"] and not b_addrs.get("eth1")
        assert cmld_tables(home.path) == ["inet cmld", "netdev cmld"]
        # GET_CONTAINER_CONFIG shows the runtime values (the original): router name and MAC
        cfg = cli(d.socket, "config", "b").out
        assert 'if_rootns_name: "vb0"' in cfg and 'if_mac: "02:00:00:00:0b:01"' in cfg, cfg

        # allowed: the own gateway, and the outside through the router (masqueraded)
        assert sh(d, "a", f"ping -c1 -W3 172.23.{n}.1").rc == 0
        r = fetch(d, "a", WORLD_ADDR)
        assert r.rc == 0 and MARK in r.out, r.out + r.err
        # denied: the other container, the other container's gateway, cmld's own services
        assert sh(d, "a", f"ping -c1 -W2 172.23.{m}.2").rc != 0
        assert sh(d, "a", f"ping -c1 -W2 172.23.{m}.1").rc != 0
        assert sh(d, "a", f"ping -c1 -W2 {HOME_ADDR}").rc != 0
        cml_service = home.popen("python3", "-m", "http.server", "--bind", "0.0.0.0", "--directory",
                                 str(cmld_factory.tmp / "www"), "9000")
        try:
            time.sleep(0.5)
            assert MARK not in fetch(d, "a", f"172.23.{n}.1", 9000, timeout=3).out
            # ... while the service itself works for its own side
            assert MARK in home.run("busybox", "wget", "-q", "-O", "-", f"http://{HOME_ADDR}:9000/mark").stdout
        finally:
            cml_service.kill()
            cml_service.wait()
        # b still reaches the outside (a's refusals did not touch it)
        assert MARK in fetch(d, "b", WORLD_ADDR).out

        # ifaces: one `ip link` block per interface, as iproute2 prints them in the container
        # (iproute2 names the peer's namespace where it finds it bound; cmld gives its id)
        r = cli(d.socket, "ifaces", "b")
        assert r.rc == 0, r.out + r.err
        assert r.out.count("container_ifaces:") == 3, r.out
        reference = subprocess.run(["ip", "-n", ub, "link"], capture_output=True, text=True, check=True).stdout
        for line in reference.splitlines():
            line = re.sub(r" link-netns(id)? \S+$", "", line.strip())
            assert line in r.out, f"{line!r} not in:\n{r.out}"

        # stop: the veth pair, the router's addresses and rules go with it
        assert cli(d.socket, "stop", "a").rc == 0
        wait_state(d, "a", "STOPPED", timeout=30)
        assert f"r_{n}" not in links(home.name)
        assert not Path(f"/run/netns/{ua}").exists()
        assert sh(d, "b", f"ping -c1 -W3 172.23.{m}.1").rc == 0
        assert d.stop() == 0
        assert [x for x in links(home.name) if x.startswith(("r_", "vb"))] == []
        assert cmld_tables(home.path) == []
    finally:
        if server is not None:
            server.kill()
            server.wait()
        world.close()
    assert root_snapshot() == before, "the machine's own links or nftables tables changed"


def test_failed_start_and_kill9_leave_nothing(cmld_factory: DaemonFactory, guestos_src: Path) -> None:
    home = cmld_factory.cmld_netns()
    lan = TestNetns("cmll")
    base = cmld_factory.tmp / "cmld-base"
    base.mkdir()
    install_guestos(guestos_src, base)
    try:
        veth_between(home, "ext9", lan, "lan9")
        _failed_start_and_kill9(cmld_factory, home, base)
    finally:
        lan.close()


def _failed_start_and_kill9(cmld_factory: DaemonFactory, home: TestNetns, base: Path) -> None:
    d = cmld_factory.start("--stop-timeout", "10", "--nic-kinds", "veth", base=base)
    # a start that fails in the network module half-way (the second vnet's name is taken)
    create(d, cmld_factory.tmp, "bad", vnet("eth0") + vnet("eth0"))
    r = start(d, "bad")
    assert r.rc != 0 and "network" in (r.out + r.err), r.out + r.err
    wait_state(d, "bad", "STOPPED")
    assert [x for x in links(home.name) if x.startswith("r_")] == []
    assert cmld_tables(home.path) == []
    assert not Path(f"/run/netns/{uuid_of(d, 'bad')}").exists()

    # kill -9 with three running containers, one with a MAC-filter bridge: the next cmld takes
    # everything away
    ours = ("r_", "kept", "br_")
    create(d, cmld_factory.tmp, "k1")
    create(d, cmld_factory.tmp, "k2", vnet("eth0", rootns="kept0"))
    create(d, cmld_factory.tmp, "k3", 'net_ifaces { netif: "ext9" mac_filter: "02:00:00:00:00:99" }\n')
    for c in ("k1", "k2", "k3"):
        assert start(d, c).rc == 0
        wait_state(d, c, "RUNNING", timeout=30)
    assert len([x for x in links(home.name) if x.startswith(ours)]) == 5  # 3 veths, br_ext9, r_ext9
    assert links(home.name)["ext9"]["master"] == "br_ext9"
    assert cmld_tables(home.path)
    os.kill(d.proc.pid, signal.SIGKILL)
    d.proc.wait()
    d2 = cmld_factory.start("--stop-timeout", "10", "--nic-kinds", "veth", base=base, name="cmld")
    deadline = time.monotonic() + 10
    while [x for x in links(home.name) if x.startswith(ours)] and time.monotonic() < deadline:
        time.sleep(0.1)
    assert [x for x in links(home.name) if x.startswith(ours)] == []
    assert "master" not in links(home.name)["ext9"]  # the NIC is free again
    assert cmld_tables(home.path) == []
    journal = json.loads((cmld_factory.tmp / "cmld-run" / "network.json").read_text())
    assert journal["links"] == {} and journal["tables"] is False
    # and it works as before: the same names again
    assert start(d2, "k2").rc == 0
    wait_state(d2, "k2", "RUNNING", timeout=30)
    assert "kept0" in links(home.name)


def test_netns_false_shares_cmld_namespace(cmld_factory: DaemonFactory, guestos_src: Path) -> None:
    home = cmld_factory.cmld_netns()
    base = cmld_factory.tmp / "cmld-base"
    base.mkdir()
    install_guestos(guestos_src, base)
    d = cmld_factory.start("--stop-timeout", "10", base=base)
    create(d, cmld_factory.tmp, "shared", "netns: false\n")
    assert start(d, "shared").rc == 0
    wait_state(d, "shared", "RUNNING", timeout=30)
    rec = json.loads((cmld_factory.tmp / "cmld-run" / "records" / f"{uuid_of(d, 'shared')}.json").read_text())
    assert os.stat(f"/proc/{rec['init_pid']}/ns/net").st_ino == os.stat(home.path).st_ino
    r = cli(d.socket, "ifaces", "shared")
    assert r.rc == 0 and ": lo:" in r.out
    assert home.run("cat", "/proc/sys/net/ipv4/ip_forward").stdout.strip() == "1"
