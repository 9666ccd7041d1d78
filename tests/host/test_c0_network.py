"""Device mode (not hosted): c0 is the only router. It gets the CML's uplink (`uplink` in cmld's
namespace, `cml` in c0, the CML's default route through c0) and every physical NIC; containers'
veths end in c0, which masquerades them; NICs move from c0 into a container and back with
`assign_iface` / `unassign_iface` (and `--persistent`); a `mac_filter` NIC is bridged in cmld's
namespace with only the listed source MACs let through. The "physical" NICs are veths into
test-owned namespaces (`cmld --nic-kinds veth`), cmld runs in a test-owned namespace too.

In the c0 test group (one worker): c0 has one fixed UUID."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from ..conftest import DaemonFactory, cli, is_root
from ..testnet import TestNetns, root_snapshot, veth_between
from .containers import install_guestos, start, wait_state
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
)

pytestmark = [pytest.mark.host, pytest.mark.skipif(not is_root(), reason="needs root")]
C0 = "00000000-0000-0000-0000-000000000000"
DEVICE_CONF = 'hostedmode: false\nsigned_configs: false\ntpm_enabled: false\nc0os: "coreos"\n'
LAN = "192.0.2"  # the MAC-filtered NIC's network (TEST-NET-1, inside test namespaces only)
ALLOWED = "02:00:00:00:aa:01"


def wait_for(what: str, check: object, timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while not check():  # type: ignore[operator]
        assert time.monotonic() < deadline, f"timed out: {what}"
        time.sleep(0.1)


def test_c0_routes_and_nics_move(cmld_factory: DaemonFactory, guestos_src: Path) -> None:
    before = root_snapshot()
    home = cmld_factory.cmld_netns()
    world, lan1, lan2 = TestNetns("cmlw"), TestNetns("cmll"), TestNetns("cmlm")
    server = None
    try:
        veth_between(home, "ext0", world, "wan0", b_addr=f"{WORLD_ADDR}/24")
        veth_between(home, "ext1", lan1, "lan1")
        veth_between(home, "ext2", lan2, "lan2", b_addr=f"{LAN}.1/24")
        lan2.ip("link", "set", "lan2", "address", ALLOWED)
        ext2_mac = links(home.name)["ext2"]["address"]
        server = http_server(world, cmld_factory.tmp / "www")
        base = cmld_factory.tmp / "cmld-base"
        base.mkdir()
        install_guestos(guestos_src, base, name="coreos")
        install_guestos(guestos_src, base)
        d = cmld_factory.start("--stop-timeout", "10", "--c0-down", "exit", "--nic-kinds", "veth",
                               base=base, device_conf=DEVICE_CONF)
        wait_state(d, "c0", "RUNNING", timeout=30)

        # the uplink: CML 172.23.0.1 <-> c0 172.23.0.2, the CML's default route through c0;
        # the NICs were renamed cmleth<N> and are all in c0
        assert addrs(home.name)["uplink"] == ["172.23.0.1/24"]
        assert default_route(home.name) == "172.23.0.2"
        assert addrs(C0)["cml"] == ["172.23.0.2/24"]
        c0_links = links(C0)
        assert {"cmleth0", "cmleth1", "cmleth2"} <= set(c0_links), sorted(c0_links)
        assert not {"ext0", "ext1", "ext2", "cmleth0"} & set(links(home.name))
        assert cmld_tables(f"/run/netns/{C0}") == ["inet cmld", "netdev cmld"]  # c0 masquerades the CML
        # what c0's own OS does with its NIC (DHCP on a device)
        mac0 = c0_links["cmleth0"]["address"]
        home.run("ip", "-n", C0, "addr", "add", f"{HOME_ADDR}/24", "dev", "cmleth0")
        home.run("ip", "-n", C0, "link", "set", "cmleth0", "up")
        # the CML reaches the outside through c0 (masqueraded by c0)
        assert MARK in home.run("busybox", "wget", "-q", "-O", "-", f"http://{WORLD_ADDR}:8080/mark").stdout

        # a container: its veth ends in c0, which routes and masquerades it
        create(d, cmld_factory.tmp, "svc")
        assert start(d, "svc").rc == 0
        wait_state(d, "svc", "RUNNING", timeout=30)
        svc = [x for x in addrs(C0) if x.startswith("r_")]
        assert len(svc) == 1
        n = int(addrs(C0)[svc[0]][0].split(".")[2])
        assert sh(d, "svc", f"ping -c1 -W3 172.23.{n}.1").rc == 0
        assert MARK in fetch(d, "svc", WORLD_ADDR).out
        # ... but not the CML behind c0
        cml_service = home.popen("python3", "-m", "http.server", "--bind", "172.23.0.1", "--directory",
                                 str(cmld_factory.tmp / "www"), "9000")
        try:
            time.sleep(0.5)
            assert MARK not in fetch(d, "svc", "172.23.0.1", 9000, timeout=3).out
            assert MARK in home.run("busybox", "wget", "-q", "-O", "-", "http://172.23.0.1:9000/mark").stdout
        finally:
            cml_service.kill()
            cml_service.wait()

        # assign_iface: the NIC leaves c0 for the container, ifaces lists it; unassign: back to c0
        r = cli(d.socket, "assign_iface", "svc", "--iface=cmleth1")
        assert r.rc == 0 and "CMD_OK" in r.out, r.out + r.err
        assert "cmleth1" not in links(C0)
        assert ": cmleth1@" in cli(d.socket, "ifaces", "svc").out  # a veth here: "@if<peer>"
        r = cli(d.socket, "assign_iface", "svc", "--iface=cmleth1")
        assert r.rc != 0 and "already assigned" in r.out, r.out
        r = cli(d.socket, "unassign_iface", "svc", "--iface=cmleth1")
        assert r.rc == 0, r.out + r.err
        assert "cmleth1" in links(C0)
        assert ": cmleth1@" not in cli(d.socket, "ifaces", "svc").out
        # --persistent: also in the config's net_ifaces, and out again
        assert cli(d.socket, "assign_iface", "svc", "--iface=cmleth1", "--persistent").rc == 0
        assert 'netif: "cmleth1"' in cli(d.socket, "config", "svc").out
        assert cli(d.socket, "unassign_iface", "svc", "--iface=cmleth1", "--persistent").rc == 0
        assert "cmleth1" in links(C0)
        # refusals: unknown NIC, one the container does not hold, malformed names; cmld serves on
        for args, needle in ((["assign_iface", "svc", "--iface=nosuch0"], "no network interface"),
                             (["unassign_iface", "svc", "--iface=cmleth0"], "holds no interface"),
                             (["assign_iface", "svc", "--iface=a/b"], "neither an interface name")):
            r = cli(d.socket, *args)
            assert r.rc != 0 and needle in r.out, (args, r.out, r.err)
        assert "cmleth0" in links(C0) and mac0 == links(C0)["cmleth0"]["address"]

        # mac_filter: the NIC comes back from c0 and is bridged in cmld's namespace
        create(d, cmld_factory.tmp, "filt",
               f'net_ifaces {{ netif: "{ext2_mac}" mac_filter: "AA:AA::AA:AA:AA" mac_filter: "{ALLOWED}" }}\n')
        assert start(d, "filt").rc == 0
        wait_state(d, "filt", "RUNNING", timeout=30)
        home_links = links(home.name)
        assert home_links["cmleth2"]["master"] == "br_cmleth2" == home_links["r_cmleth2"]["master"]
        assert sh(d, "filt", f"ip addr add {LAN}.2/24 dev c_cmleth2 && ip link set c_cmleth2 up").rc == 0
        assert lan2.run("busybox", "ping", "-c1", "-W3", f"{LAN}.2", check=False).returncode == 0  # allowed MAC
        lan2.ip("neigh", "flush", "dev", "lan2")
        lan2.ip("link", "set", "lan2", "address", "02:00:00:00:bb:02")
        assert lan2.run("busybox", "ping", "-c1", "-W2", f"{LAN}.2", check=False).returncode != 0  # any other: dropped
        assert cli(d.socket, "stop", "filt").rc == 0
        wait_state(d, "filt", "STOPPED", timeout=30)
        home_links = links(home.name)
        assert "br_cmleth2" not in home_links and "r_cmleth2" not in home_links and "cmleth2" in home_links

        # cmld goes down: every NIC back in its namespace under its cml name, nothing of cmld left
        assert d.stop() == 0
        home_links = links(home.name)
        assert {"cmleth0", "cmleth1", "cmleth2"} <= set(home_links), sorted(home_links)
        assert home_links["cmleth0"]["address"] == mac0
        assert "uplink" not in home_links and not [x for x in home_links if x.startswith(("r_", "br_"))]
        assert cmld_tables(home.path) == []
    finally:
        if server is not None:
            server.kill()
            server.wait()
        for ns in (world, lan1, lan2):
            ns.close()
    assert root_snapshot() == before
