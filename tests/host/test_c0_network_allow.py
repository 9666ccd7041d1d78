"""`net_allow` in device mode (c0 is the router): a container reaches c0's own services and the
CML's (behind c0's uplink) only on the ports its config names; a container without `net_allow`
reaches neither (cmld/net/allow.py; hosted mode: test_network_allow.py). cmld runs in a
test-owned network namespace. In the c0 test group (one worker): c0 has one fixed UUID."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from ..conftest import DaemonFactory, is_root
from ..testnet import root_snapshot
from .containers import install_guestos, start, uuid_of, wait_state
from .netlib import MARK, addrs, create, fetch
from .test_network_allow import allowed_elements, serve_in

pytestmark = [pytest.mark.host, pytest.mark.skipif(not is_root(), reason="needs root")]
C0 = "00000000-0000-0000-0000-000000000000"
DEVICE_CONF = 'hostedmode: false\nsigned_configs: false\ntpm_enabled: false\nc0os: "coreos"\n'
CML = "172.23.0.1"  # the CML's end of its uplink through c0


def gateway(uuid: str) -> str:
    (a,) = [x for x in addrs(uuid)["host0"] if x.startswith("172.23.")]
    return a.split("/")[0].rsplit(".", 1)[0] + ".1"


def test_net_allow_to_c0_and_to_the_cml_through_c0(cmld_factory: DaemonFactory, guestos_src: Path) -> None:
    before = root_snapshot()
    home = cmld_factory.cmld_netns()
    base = cmld_factory.tmp / "cmld-base"
    base.mkdir()
    install_guestos(guestos_src, base, name="coreos")
    install_guestos(guestos_src, base)
    www = cmld_factory.tmp / "www"
    www.mkdir()
    (www / "mark").write_text(MARK + "\n")
    d = cmld_factory.start("--stop-timeout", "10", "--c0-down", "exit", base=base, device_conf=DEVICE_CONF)
    wait_state(d, "c0", "RUNNING", timeout=30)
    create(d, cmld_factory.tmp, "a", 'net_allow { container: "c0" port: 8080 }\nnet_allow { cml: true port: 9000 }\n')
    create(d, cmld_factory.tmp, "z")
    for name in ("a", "z"):
        assert start(d, name).rc == 0
        wait_state(d, name, "RUNNING", timeout=30)
    gw_a, gw_z = gateway(uuid_of(d, "a")), gateway(uuid_of(d, "z"))
    elems = allowed_elements(f"/run/netns/{C0}")
    assert sorted(e[1:] for e in elems) == [[CML, "tcp", 9000], [gw_a, "tcp", 8080]], elems
    serve_in(d, "c0", 8080, 8081)
    cml_service = home.popen("busybox", "httpd", "-f", "-p", f"{CML}:9000", "-h", str(www))
    try:
        time.sleep(0.5)
        r = fetch(d, "a", gw_a, 8080)
        assert r.rc == 0 and MARK in r.out, r.out + r.err
        r = fetch(d, "a", CML, 9000)
        assert r.rc == 0 and MARK in r.out, r.out + r.err
        assert MARK not in fetch(d, "a", gw_a, 8081, timeout=3).out  # another port of c0
        assert MARK not in fetch(d, "z", gw_z, 8080, timeout=3).out  # z has no net_allow
        assert MARK not in fetch(d, "z", CML, 9000, timeout=3).out
    finally:
        cml_service.kill()
        cml_service.wait()
    assert d.stop() == 0
    assert root_snapshot() == before, "the machine's own links or nftables tables changed"
