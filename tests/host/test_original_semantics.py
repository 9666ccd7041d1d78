"""Where the original's behaviour is what scripts rely on: remove and reboot with containers
running, a GuestOS push whose client hangs up at once (the original's `converter`), and relative
`file://` update URLs resolved inside the pushing container (c0), never outside it."""

from __future__ import annotations

import json
import shutil
import socket
import time
from pathlib import Path

import pytest

from cml_common import framing
from cml_common.messages.control_pb2 import ControllerToDaemon

from ..conftest import DaemonFactory, cli, is_root
from .containers import create, host_leaks, install_guestos, start, state, uuid_of, wait_state
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


def test_relative_file_urls_resolve_inside_c0_only(cmld_factory: DaemonFactory, guestos_src: Path) -> None:
    """A relative file:// URL pushed from c0 is read in c0's root (the original's rule); `..` and
    symlinks in it cannot reach the host's files."""
    base = cmld_factory.tmp / "cmld-base"
    install_guestos(guestos_src, base, name="coreos")
    device = 'hostedmode: false\nsigned_configs: false\ntpm_enabled: false\nc0os: "coreos"\n'
    d = cmld_factory.start("--stop-timeout", "10", "--c0-down", "exit", base=base, device_conf=device)
    wait_state(d, "c0", "RUNNING", timeout=30)
    run_dir = cmld_factory.tmp / "cmld-run"
    init = json.loads((run_dir / "records" / f"{C0}.json").read_text())["init_pid"]
    c0_root = Path(f"/proc/{init}/root")
    inside = c0_root / "run" / "socket" / "cml-control"
    tmp = cmld_factory.tmp

    # the images are in c0's own /run (a tmpfs of c0), the URL is relative: file://run/updates
    conf = publish(guestos_src, c0_root / "run" / "updates", Path("/nonexistent"), tmp, version=2,
                   url="file://run/updates", signed=False)
    r = cli(inside, "push_guestos_config", str(conf), timeout=60)
    assert r.rc == 0 and "GUESTOS_MGR_INSTALL_COMPLETED" in r.out, r.out + r.err

    # the same files on the host at /run/updates-escape-test are out of reach: `..` stays in c0
    host_repo = Path("/run") / f"cml-test-escape-{init}"
    try:
        (tmp / "esc").mkdir()
        conf3 = publish(guestos_src, host_repo, Path("/nonexistent"), tmp / "esc", version=3,
                        url=f"file://../../../..{host_repo}", signed=False)
        assert (host_repo / "operatingsystems" / "x86" / "pushos-3" / "root.img").exists()
        r = cli(inside, "push_guestos_config", str(conf3), timeout=60)
        assert r.rc != 0 and "GUESTOS_MGR_INSTALL_FAILED" in r.out and "No such file" in r.out, r.out + r.err
        # a symlink inside c0 pointing at the host path is resolved inside c0 too
        (c0_root / "run" / "link").symlink_to(host_repo)
        (tmp / "esc4").mkdir()
        conf4 = publish(guestos_src, host_repo, Path("/nonexistent"), tmp / "esc4", version=4,
                        url="file://run/link", signed=False)
        r = cli(inside, "push_guestos_config", str(conf4), timeout=60)
        assert r.rc != 0 and "GUESTOS_MGR_INSTALL_FAILED" in r.out and "No such file" in r.out, r.out + r.err
    finally:
        shutil.rmtree(host_repo, ignore_errors=True)
    assert "version: 2" in cli(d.socket, "list_guestos").out
    assert not (base / "operatingsystems" / "pushos-3.conf").exists()
    assert not (base / "operatingsystems" / "pushos-4.conf").exists()
    assert state(d, "c0") == "RUNNING"
