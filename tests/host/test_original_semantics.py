"""Where the original's behaviour is what scripts rely on: remove and reboot with containers
running, a GuestOS push whose client hangs up at once (the original's `converter`), and relative
`file://` update URLs resolved inside the pushing container (c0), never outside it."""

from __future__ import annotations

import socket
import time
from pathlib import Path

import pytest

from cml_common import framing
from cml_common.messages.control_pb2 import ControllerToDaemon

from ..conftest import DaemonFactory, cli, is_root
from .containers import create, host_leaks, install_guestos, start, uuid_of, wait_state
from .test_guestos_push import publish

pytestmark = [pytest.mark.host, pytest.mark.skipif(not is_root(), reason="needs root")]
C0 = "00000000-0000-0000-0000-000000000000"
UNSIGNED = "hostedmode: true\nsigned_configs: false\ntpm_enabled: false\n"


def test_remove_of_active_containers(cmld_factory: DaemonFactory, guestos_src: Path) -> None:
    base = cmld_factory.tmp / "cmld-base"
    install_guestos(guestos_src, base)
    d = cmld_factory.start("--stop-timeout", "10", base=base)
    run_dir = cmld_factory.tmp / "cmld-run"
    uuids = []
    for name, then in (("running", None), ("frozen", "freeze"), ("booting", None)):
        create(d, cmld_factory.tmp, name)
        uuids.append(uuid_of(d, name))
        assert start(d, name).rc == 0
        if name != "booting":
            wait_state(d, name, "RUNNING")
        if then:
            assert cli(d.socket, then, name).rc == 0
            wait_state(d, name, "FROZEN")
    for name, uuid in zip(("running", "frozen", "booting"), uuids, strict=True):
        r = cli(d.socket, "remove", name)
        assert r.rc == 0 and "response: CMD_OK" in r.out, r.out + r.err
        assert name not in cli(d.socket, "list").out
        assert not (base / "containers" / f"{uuid}.conf").exists()
        assert not (base / "containers" / uuid).exists()
    time.sleep(0.2)
    assert host_leaks(run_dir, uuids) == []
    assert "killing it first" in d.log_text()


def test_reboot_stops_running_containers_and_cmld_keeps_serving(cmld_factory: DaemonFactory,
                                                                 guestos_src: Path) -> None:
    base = cmld_factory.tmp / "cmld-base"
    install_guestos(guestos_src, base)
    d = cmld_factory.start("--stop-timeout", "10", base=base)
    for name in ("one", "two"):
        create(d, cmld_factory.tmp, name)
        assert start(d, name).rc == 0
        wait_state(d, name, "RUNNING")
    r = cli(d.socket, "reboot")
    assert r.rc == 0 and r.out == "code: RESPONSE\nresponse: CMD_OK\n", r.out + r.err
    for name in ("one", "two"):
        wait_state(d, name, "STOPPED", timeout=20)
    # hosted mode: the host is not rebooted, cmld stays and containers start again
    assert d.alive()
    assert start(d, "one").rc == 0
    wait_state(d, "one", "RUNNING")
    assert "REBOOT_DEVICE: stopping every container" in d.log_text()


def test_push_whose_client_hangs_up_is_installed(cmld_factory: DaemonFactory, guestos_src: Path) -> None:
    """The original's converter sends PUSH_GUESTOS_CONFIG and closes: the install goes on."""
    d = cmld_factory.start(device_conf=UNSIGNED)
    tmp = cmld_factory.tmp
    repo = tmp / "repo"
    conf = publish(guestos_src, repo, Path("/nonexistent"), tmp, version=2, url=f"file://{repo}", signed=False)
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.connect(str(d.socket))
        framing.send_frame(s, framing.serialize(ControllerToDaemon(
            command=ControllerToDaemon.PUSH_GUESTOS_CONFIG, guestos_config_file=conf.read_bytes())))
    deadline = time.monotonic() + 30
    while "pushos" not in cli(d.socket, "list_guestos").out:
        assert time.monotonic() < deadline, d.log_text()[-3000:]
        time.sleep(0.1)
    assert (d.base / "operatingsystems" / "pushos-2" / "root.img").read_bytes() == \
        (guestos_src / "busybox-1" / "root.img").read_bytes()
    assert "went away before its reply" in d.log_text()
    assert d.alive()
