"""Deny by default between partitions, and the exceptions a container's config grants
(`net_allow`, cmld/net/allow.py), in hosted mode inside test-owned network namespaces (cmld runs
in one with `--netns`): a container reaches another container's service or the CML's only on
the ports its config names, a container without such a config reaches neither, and a config
whose `net_allow` cannot be meant is refused at create with nothing left behind."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from ..conftest import Daemon, DaemonFactory, cli, is_root
from ..testnet import root_snapshot
from .containers import install_guestos, start, uuid_of, wait_state
from .netlib import MARK, addrs, create, fetch, ruleset, sh

pytestmark = [pytest.mark.host, pytest.mark.skipif(not is_root(), reason="needs root")]


def address(uuid: str) -> str:
    (a,) = [x for x in addrs(uuid)["host0"] if x.startswith("172.23.")]
    return a.split("/")[0]


def serve_in(d: Daemon, name: str, *ports: int) -> None:
    """busybox httpd on `ports` inside the container (it daemonizes: the exec session ends)."""
    script = f"mkdir -p /tmp/www && echo {MARK} > /tmp/www/mark"
    for p in ports:
        script += f" && httpd -p {p} -h /tmp/www"
    r = sh(d, name, script)
    assert r.rc == 0, r.out + r.err


def allowed_elements(ns_path: Path | str) -> list[list[object]]:
    for item in ruleset(ns_path):
        s = item.get("set")
        if s and s["table"] == "cmld" and s["name"] == "allowed":
            return [e["concat"] for e in s.get("elem", [])]
    raise AssertionError("no set `allowed` in cmld's table")


def test_net_allow_opens_exactly_the_named_ports_and_the_default_denies(
        cmld_factory: DaemonFactory, guestos_src: Path) -> None:
    before = root_snapshot()
    home = cmld_factory.cmld_netns()
    base = cmld_factory.tmp / "cmld-base"
    base.mkdir()
    install_guestos(guestos_src, base)
    d = cmld_factory.start("--stop-timeout", "10", base=base)
    # a: to b's 8080 and the CML's 9000 (both tcp); c: nothing. a starts before b: its allow
    # takes effect when b comes up.
    create(d, cmld_factory.tmp, "a", 'net_allow { container: "b" port: 8080 }\nnet_allow { cml: true port: 9000 }\n')
    create(d, cmld_factory.tmp, "b")
    create(d, cmld_factory.tmp, "c")
    for name in ("a", "c"):
        assert start(d, name).rc == 0
        wait_state(d, name, "RUNNING", timeout=30)
    ua, uc = uuid_of(d, "a"), uuid_of(d, "c")
    gw_a = address(ua).rsplit(".", 1)[0] + ".1"
    gw_c = address(uc).rsplit(".", 1)[0] + ".1"
    assert allowed_elements(home.path) == [[_port(home.name, gw_a), gw_a, "tcp", 9000]]

    assert start(d, "b").rc == 0
    wait_state(d, "b", "RUNNING", timeout=30)
    ub = uuid_of(d, "b")
    ip_b = address(ub)
    serve_in(d, "b", 8080, 8081)
    cml_service = home.popen("busybox", "httpd", "-f", "-p", "9000", "-h", str(_www(cmld_factory.tmp)))
    try:
        time.sleep(0.5)
        # the allowed paths
        r = fetch(d, "a", ip_b, 8080)
        assert r.rc == 0 and MARK in r.out, r.out + r.err
        r = fetch(d, "a", gw_a, 9000)
        assert r.rc == 0 and MARK in r.out, r.out + r.err
        # ... and nothing beside them: another port of b, the CML's other ports, ICMP to b
        assert MARK not in fetch(d, "a", ip_b, 8081, timeout=3).out
        assert sh(d, "a", f"ping -c1 -W2 {ip_b}").rc != 0
        # c has no net_allow: b and the CML stay closed to it (the default)
        assert MARK not in fetch(d, "c", ip_b, 8080, timeout=3).out
        assert MARK not in fetch(d, "c", gw_c, 9000, timeout=3).out
        # the other way round is not granted by a's config: b cannot reach a
        serve_in(d, "a", 8080)
        assert MARK not in fetch(d, "b", address(ua), 8080, timeout=3).out
        assert MARK in fetch(d, "a", "127.0.0.1", 8080).out  # (a's server itself answers)
    finally:
        cml_service.kill()
        cml_service.wait()

    # b stops: its element goes; a's CML allow stays. c stops: nothing of it was there.
    assert cli(d.socket, "stop", "b").rc == 0
    wait_state(d, "b", "STOPPED", timeout=30)
    assert allowed_elements(home.path) == [[_port(home.name, gw_a), gw_a, "tcp", 9000]]
    assert d.stop() == 0
    assert root_snapshot() == before, "the machine's own links or nftables tables changed"


@pytest.mark.parametrize("body, why", [
    ('net_allow { port: 80 }\n', "exactly one target"),
    ('net_allow { container: "b" cml: true port: 80 }\n', "exactly one target"),
    ('net_allow { container: "b" port: 0 }\n', "port 0 is not in 1..65535"),
    ('net_allow { container: "b" port: 70000 }\n', "port 70000 is not in 1..65535"),
    ('net_allow { cml: true port: 80 protocol: "icmp" }\n', "is not one of tcp, udp"),
    ('net_allow { cml: true }\n', ""),  # port is required: the text parser refuses it
])
def test_a_net_allow_that_cannot_be_meant_is_refused_at_create(
        cmld_factory: DaemonFactory, guestos_src: Path, body: str, why: str) -> None:
    base = cmld_factory.tmp / "cmld-base"
    base.mkdir(exist_ok=True)
    install_guestos(guestos_src, base)
    d = cmld_factory.start("--stop-timeout", "10", base=base)
    p = cmld_factory.tmp / "bad.conf"
    p.write_text(f'name: "bad"\nguest_os: "busybox"\ncolor: 0\ntype: CONTAINER\ntoken_type: NONE\n{body}')
    r = cli(d.socket, "create", str(p))
    assert r.rc != 0, r.out
    assert why in r.out + r.err, r.out + r.err
    assert not list(base.glob("**/*.conf")) or all("bad" not in c.read_text() for c in base.glob("**/*.conf"))
    assert cli(d.socket, "list").rc == 0  # the daemon keeps serving
    create(d, cmld_factory.tmp, "good", 'net_allow { cml: true port: 80 protocol: "udp" }\n')


def _port(ns: str, gateway: str) -> str:
    """The router-side interface that holds `gateway` in cmld's namespace."""
    (name,) = [n for n, a in addrs(ns).items() if f"{gateway}/24" in a]
    return name


def _www(tmp: Path) -> Path:
    www = tmp / "cml-www"
    www.mkdir(exist_ok=True)
    (www / "mark").write_text(MARK + "\n")
    return www


def test_under_signed_configs_the_grant_is_the_signed_one(cmld_factory: DaemonFactory, guestos_src: Path) -> None:
    """With signed_configs the grant is part of what scd verifies: the same config with its
    net_allow changed (another port) or without a signature is refused, nothing is stored and
    nothing granted; the signed one's grant is in the router's set once the container runs."""
    from .containers import container_conf
    from .scdlib import SIGNED_DEVICE_CONF, make_pki, scd_and_cmld, sign

    home = cmld_factory.cmld_netns()
    pki = make_pki(cmld_factory.tmp / "pki", "ec256")
    _, d = scd_and_cmld(cmld_factory, pki=pki, guestos=guestos_src, device_conf=SIGNED_DEVICE_CONF)
    conf = cmld_factory.tmp / "web.conf"
    conf.write_text(container_conf("web", guestos_version=1) + "net_allow { cml: true port: 9000 }\n")
    sig, cert = sign(conf, pki)
    widened = cmld_factory.tmp / "web-widened.conf"
    widened.write_bytes(conf.read_bytes().replace(b"port: 9000", b"port: 22"))
    r = cli(d.socket, "create", str(widened), str(sig), str(cert))
    assert r.rc != 0, r.out
    assert cli(d.socket, "create", str(conf)).rc != 0
    assert not list((d.base / "containers").glob("*.conf"))
    assert "BAD_SIGNATURE" in d.log_text()
    r = cli(d.socket, "create", str(conf), str(sig), str(cert))
    assert r.rc == 0, r.out + r.err
    assert start(d, "web").rc == 0
    wait_state(d, "web", "RUNNING", timeout=30)
    gw = address(uuid_of(d, "web")).rsplit(".", 1)[0] + ".1"
    assert allowed_elements(home.path) == [[_port(home.name, gw), gw, "tcp", 9000]]
    assert cli(d.socket, "stop", "web").rc == 0
    wait_state(d, "web", "STOPPED", timeout=30)
