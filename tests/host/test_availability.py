"""Daemon availability, as the original's unit stage and unit supervision: cmld (with
--wait-services, as its systemd unit runs it) starts no container before tpm2d and scd answer and
scd has written the device UUID; when scd or tpm2d exits (SIGTERM or SIGKILL) and is restarted
(here by the test, as systemd's Restart=always would after RestartSec=1), cmld keeps its
containers running, registers again as scd's event listener and uses both daemons again."""

from __future__ import annotations

import signal
import subprocess
import time
import uuid as uuidlib
from pathlib import Path

import pytest

from tests.conftest import BIN, Daemon, DaemonFactory, cli, is_root, wait_for_socket
from tests.host import tpm2dlib
from tests.host.containers import container_conf, install_guestos, start, state, wait_state
from tests.host.scdlib import launch_scd, prepare_base
from tests.host.swtpmlib import running_swtpm

pytestmark = [pytest.mark.host, pytest.mark.skipif(not is_root(), reason="needs root")]
MEASURED = "hostedmode: true\nsigned_configs: false\ntpm_enabled: true\n"
RESTART_SEC = 1.0  # the units' RestartSec=


def wait_log(d: Daemon, text: str, count: int = 1, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if d.log_text().count(text) >= count:
            return
        time.sleep(0.1)
    raise AssertionError(f"{text!r} not logged {count}x; log:\n{d.log_text()[-3000:]}")


def launch_cmld_waiting(factory: DaemonFactory, base: Path) -> Daemon:
    """cmld as its unit runs it; its control socket comes up only once it has everything."""
    (base / "device.conf").write_text(MEASURED)
    tmp = factory.tmp
    cmd = [str(BIN / "cmld"), "--foreground", "--base-dir", str(base), "--socket", str(tmp / "cmld.sock"),
           "--log-dir", str(tmp / "cmld-logs"), "--scd-socket", str(tmp / "scd.sock"),
           "--tpm2d-socket", str(tmp / "tpm2d.sock"), "--run-dir", str(tmp / "cmld-run"), "--stop-timeout", "10",
           "--wait-services"]
    with (tmp / "cmld.stderr").open("ab") as err:
        proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=err)
    d = Daemon(proc, tmp / "cmld.sock", base, tmp / "cmld-logs")
    factory.started.append(d)
    return d


def pull_csr_works(d: Daemon, tmp: Path) -> bool:
    out = tmp / f"csr-{uuidlib.uuid4().hex[:6]}.pem"
    r = cli(d.socket, "pull_csr", str(out))
    return r.rc == 0 and out.exists() and b"BEGIN CERTIFICATE REQUEST" in out.read_bytes()


def test_cmld_waits_for_its_daemons_and_survives_their_restarts(cmld_factory: DaemonFactory,
                                                                guestos_src: Path) -> None:
    tmp = cmld_factory.tmp
    base = prepare_base(tmp / "cmld-base", None)
    install_guestos(guestos_src, base)
    (base / "containers").mkdir(mode=0o700)
    (base / "containers" / f"{uuidlib.uuid4()}.conf").write_text(container_conf("auto", allow_autostart=True))
    with running_swtpm() as tpm:
        d = launch_cmld_waiting(cmld_factory, base)
        # nothing is there: cmld waits, says for what, and runs nothing
        wait_log(d, "waiting for tpm2d (")
        log = d.log_text()
        assert "scd (" in log and "the device UUID (tokens/device_id.conf" in log
        t = tpm2dlib.launch(cmld_factory, tpm)
        time.sleep(1.5)
        assert d.alive() and not d.socket.exists()
        assert not (tmp / "cmld-run" / "records").exists() or not any((tmp / "cmld-run" / "records").iterdir())
        scd = launch_scd(cmld_factory, base, "--device-key", "file")
        wait_for_socket(d.socket, d.proc, timeout=30)
        wait_state(d, "auto", "RUNNING", timeout=30)
        log = d.log_text()
        assert "scd and tpm2d and the device UUID" in log and "containers may start" in log
        assert log.index("containers may start") < log.index("container auto (")
        assert "into PCR 11" in log  # the container was measured by tpm2d
        wait_log(d, "registered as scd's event listener")
        assert pull_csr_works(d, tmp)

        # scd ends (TERM, then KILL) and is restarted: containers stay, cmld registers again
        for n, sig in enumerate((signal.SIGTERM, signal.SIGKILL), start=2):
            scd.proc.send_signal(sig)
            scd.proc.wait(15)
            wait_log(d, "scd closed the event listener connection", count=n - 1)
            time.sleep(RESTART_SEC)
            assert state(d, "auto") == "RUNNING" and d.alive()
            scd = launch_scd(cmld_factory, base, "--device-key", "file")
            wait_log(d, f"registered as scd's event listener again (registration {n})")
            assert pull_csr_works(d, tmp), sig

        # tpm2d ends (TERM, then KILL) and is restarted: the next start is measured again
        for sig in (signal.SIGTERM, signal.SIGKILL):
            t.daemon.proc.send_signal(sig)
            t.daemon.proc.wait(15)
            time.sleep(RESTART_SEC)
            assert state(d, "auto") == "RUNNING" and d.alive()
            t = tpm2dlib.launch(cmld_factory, tpm)
            measured = d.log_text().count("into PCR 11")
            assert cli(d.socket, "stop", "auto").rc == 0
            wait_state(d, "auto", "STOPPED", timeout=20)
            r = start(d, "auto")
            assert r.rc == 0 and "CONTAINER_START_OK" in r.out, (sig, r.out, d.log_text()[-2000:])
            wait_state(d, "auto", "RUNNING")
            assert d.log_text().count("into PCR 11") > measured
        with t.client() as c:
            assert c.ml_list()  # the restarted tpm2d holds the measurements (its ml state survives)
        assert cli(d.socket, "stop", "auto").rc == 0
        wait_state(d, "auto", "STOPPED", timeout=20)
        d.stop()
