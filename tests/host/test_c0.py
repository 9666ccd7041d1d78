"""c0, the management container, on a device (not hosted): made from device.conf's c0os when it has
no config, started first and privileged, holding the control socket, protected from the control
API, and taking every other container (and cmld) down with it."""

from __future__ import annotations

import json
import re
import shutil
import time
import uuid as uuidlib
from pathlib import Path

import pytest

from ..conftest import DaemonFactory, cli, is_root
from .containers import container_conf, host_leaks, install_guestos, run, state, wait_state
from .test_guestos_push import publish

pytestmark = [pytest.mark.host, pytest.mark.skipif(not is_root(), reason="needs root")]
C0 = "00000000-0000-0000-0000-000000000000"
DEVICE_CONF = 'hostedmode: false\nsigned_configs: false\ntpm_enabled: false\nc0os: "coreos"\n'



def cap_bits(status: str) -> int:
    return int(re.search(r"CapBnd:\s*([0-9a-f]+)", status).group(1), 16)  # type: ignore[union-attr]


@pytest.mark.req("OS 02")
def test_c0_on_a_device(cmld_factory: DaemonFactory, guestos_src: Path) -> None:
    from cmld.linux import CAP

    base = cmld_factory.tmp / "cmld-base"
    base.mkdir()
    install_guestos(guestos_src, base, name="coreos")
    install_guestos(guestos_src, base, name="busybox")
    (base / "containers").mkdir(mode=0o700)
    svc_uuid = str(uuidlib.uuid4())
    (base / "containers" / f"{svc_uuid}.conf").write_text(container_conf("svc", allow_autostart=True))
    d = cmld_factory.start("--stop-timeout", "10", "--c0-down", "exit", base=base, device_conf=DEVICE_CONF)
    run_dir = cmld_factory.tmp / "cmld-run"

    # the implicit c0 is listed first, with the all-zero UUID, and comes up before anything else
    wait_state(d, "svc", "RUNNING", timeout=30)
    assert state(d, "c0") == "RUNNING"
    listing = cli(d.socket, "list").out
    assert listing.index(C0) < listing.index(svc_uuid), listing
    log = d.log_text()
    c0_running = log.index(f"container c0 ({C0}): BOOTING -> RUNNING")
    svc_starting = log.index(f"container svc ({svc_uuid}): STOPPED -> STARTING")
    assert c0_running < svc_starting
    assert not (base / "containers" / f"{C0}.conf").exists()  # in memory only, as the original
    key = base / "keys" / f"{C0}.key"  # c0's raw volume key (INTEGRITY_ONLY where there is device-mapper)
    assert key.stat().st_size == 32 and key.stat().st_mode & 0o777 == 0o600

    # privileged: no user namespace, and SYS_TIME / SYS_CHROOT kept, which others lose
    assert run(d, "c0", "nopty", "cat", "/proc/self/uid_map").out.split() == ["0", "0", "4294967295"]
    c0_bnd = cap_bits(run(d, "c0", "nopty", "cat", "/proc/1/status").out)
    for cap in ("SYS_TIME", "SYS_CHROOT", "SYS_TTY_CONFIG"):
        assert c0_bnd & (1 << CAP[cap]), cap
    for cap in ("SYS_MODULE", "MAC_ADMIN"):
        assert not c0_bnd & (1 << CAP[cap]), cap

    # the control socket lives in c0 (and only there), owned by c0's root, and it is privileged
    ls = run(d, "c0", "nopty", "ls", "-ln", "/run/socket/").out
    assert re.search(r"^srw------- +\d+ 0 +0 .* cml-control$", ls, re.M), ls
    assert "cml-control" not in run(d, "svc", "nopty", "ls", "/run/socket/").out
    init = json.loads((run_dir / "records" / f"{C0}.json").read_text())["init_pid"]
    inside = Path(f"/proc/{init}/root/run/socket/cml-control")
    r = cli(inside, "list")
    assert r.rc == 0 and svc_uuid in r.out and C0 in r.out, r.out + r.err
    assert cli(inside, "freeze", "svc").rc == 0
    wait_state(d, "svc", "FROZEN")
    assert cli(inside, "unfreeze", "svc").rc == 0
    wait_state(d, "svc", "RUNNING")

    # c0 itself cannot be stopped, started or removed through the API
    for cmd in ("stop", "start"):
        r = cli(d.socket, cmd, "c0")
        assert "CMD_UNSUPPORTED" in r.out + r.err, (cmd, r.out, r.err)
    r = cli(d.socket, "remove", "c0")
    assert r.rc != 0 and "CMD_FAILED" in r.out, r.out
    assert state(d, "c0") == "RUNNING"

    # halting c0 from inside stops every other container, then cmld (no systemd to power off)
    run(d, "c0", "nopty", "poweroff")
    assert d.proc.wait(timeout=40) == 0
    log = d.log_text()
    assert "c0 is STOPPED: stopping every other container" in log
    assert f"container svc ({svc_uuid}): " in log and "-> STOPPED" in log.split("c0 is STOPPED")[1]
    assert "all containers are down: cmld exits instead of a power off" in log
    assert not inside.exists()
    time.sleep(0.2)
    assert host_leaks(run_dir, [C0, svc_uuid]) == []


def test_c0_failing_to_start_holds_back_the_others(cmld_factory: DaemonFactory, guestos_src: Path) -> None:
    base = cmld_factory.tmp / "cmld-base"
    base.mkdir()
    install_guestos(guestos_src, base, name="coreos", init_path="/sbin/no-such-init")
    install_guestos(guestos_src, base, name="busybox")
    (base / "containers").mkdir(mode=0o700)
    (base / "containers" / f"{uuidlib.uuid4()}.conf").write_text(container_conf("svc", allow_autostart=True))
    # no /sbin/cservice to fall back on either
    d = cmld_factory.start("--c0-down", "exit", "--cservice", str(base / "no-cservice"), base=base,
                           device_conf=DEVICE_CONF)
    deadline = time.monotonic() + 20
    while "c0 did not come up" not in d.log_text() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert "init /sbin/no-such-init is missing" in d.log_text()
    assert "c0 did not come up: no other container is started" in d.log_text()
    assert state(d, "svc") == "STOPPED" and state(d, "c0") == "STOPPED"
    assert d.proc.poll() is None  # cmld stays up: the operator can look at what went wrong


def test_c0_in_hosted_mode_is_first_but_not_essential(cmld_factory: DaemonFactory, guestos_src: Path) -> None:
    base = cmld_factory.tmp / "cmld-base"
    base.mkdir()
    install_guestos(guestos_src, base, name="busybox")
    (base / "containers").mkdir(mode=0o700)
    (base / "containers" / f"{C0}.conf").write_text(container_conf("core0"))
    svc_uuid = str(uuidlib.uuid4())
    (base / "containers" / f"{svc_uuid}.conf").write_text(container_conf("svc", allow_autostart=True))
    d = cmld_factory.start("--stop-timeout", "10", base=base)
    wait_state(d, "svc", "RUNNING", timeout=30)
    log = d.log_text()
    assert log.index(f"container core0 ({C0}): BOOTING -> RUNNING") < log.index(f"container svc ({svc_uuid}): "
                                                                                "STOPPED -> STARTING")
    # the config file's userns: true does not apply to c0
    assert run(d, "core0", "nopty", "cat", "/proc/self/uid_map").out.split() == ["0", "0", "4294967295"]
    run(d, "core0", "nopty", "poweroff")
    wait_state(d, "core0", "STOPPED", timeout=30)
    time.sleep(0.5)
    assert state(d, "svc") == "RUNNING" and d.proc.poll() is None


@pytest.mark.req("OS 02")
def test_relative_file_urls_resolve_inside_c0_only(cmld_factory: DaemonFactory, guestos_src: Path) -> None:
    """A relative file:// URL pushed from c0 is read in c0's root (the original's rule); `..` and
    symlinks in it cannot reach the host's files."""
    base = cmld_factory.tmp / "cmld-base"
    install_guestos(guestos_src, base, name="coreos")
    d = cmld_factory.start("--stop-timeout", "10", "--c0-down", "exit", base=base, device_conf=DEVICE_CONF)
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


def test_fifo_from_c0_into_a_container(cmld_factory: DaemonFactory, guestos_src: Path) -> None:
    """`fifos: "x"`: c0 writes /dev/fifos/x, the container reads its own /dev/fifos/x (the
    original's CI check); a second container has no such file."""
    import threading

    base = cmld_factory.tmp / "cmld-base"
    base.mkdir()
    install_guestos(guestos_src, base, name="coreos")
    install_guestos(guestos_src, base, name="busybox")
    (base / "containers").mkdir(mode=0o700)
    (base / "containers" / f"{uuidlib.uuid4()}.conf").write_text(
        container_conf("svc", allow_autostart=True, fifos="x"))
    (base / "containers" / f"{uuidlib.uuid4()}.conf").write_text(container_conf("other", allow_autostart=True))
    d = cmld_factory.start("--stop-timeout", "10", "--c0-down", "exit", base=base, device_conf=DEVICE_CONF)
    wait_state(d, "svc", "RUNNING", timeout=30)
    wait_state(d, "other", "RUNNING", timeout=30)
    assert re.search(r"^prw------- +\d+ 0 +0 .* x$", run(d, "c0", "nopty", "ls", "-ln", "/dev/fifos/").out, re.M)
    out: list[str] = []
    t = threading.Thread(target=lambda: out.append(run(d, "svc", "nopty", "cat", "/dev/fifos/x").out))
    t.start()
    time.sleep(0.5)
    assert run(d, "c0", "nopty", "sh", "-c", "echo written in c0 > /dev/fifos/x").rc == 0
    t.join(30)
    assert out == ["written in c0\n"], out
    r = run(d, "other", "nopty", "sh", "-c", "cat /dev/fifos/x; ls /dev")
    assert "can't open '/dev/fifos/x': No such file" in r.out and "fifos" not in r.out.split("\n", 1)[1], r.out
    run(d, "c0", "nopty", "poweroff")
    assert d.proc.wait(timeout=40) == 0
