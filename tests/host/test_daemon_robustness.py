"""A daemon that cannot be stuck, flooded or made to forge its log (issue 12), against a real cmld
and real containers (hosted mode, the demo GuestOS).

- Every child of cmld is reaped. The orphan reaper works on its own (`reaper_probe.py`). In cmld,
  an exec session dies with its client, and the in-container half of an exec helper that was
  killed is killed and reaped. A container stays stoppable and startable after either.
- Log lines: a newline in a string a container passes (a mknod path) is escaped, never a line of
  its own; a flood of refused mknod calls writes at most the burst plus a summary line.
- The service socket: a connection that sends malformed frames is closed after 8, and the control
  socket answers meanwhile.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import signal
import socket
import struct
import subprocess
import sys
import time
from pathlib import Path

import pytest

from ..conftest import BIN, Daemon, DaemonFactory, cli, is_root
from .containers import create, install_guestos, run, start, state, uuid_of, wait_state

pytestmark = [pytest.mark.host, pytest.mark.skipif(not is_root(), reason="needs root")]
HERE = Path(__file__).resolve().parent


@pytest.fixture
def running(cmld_factory: DaemonFactory, guestos_src: Path) -> Daemon:
    base = cmld_factory.tmp / "cmld-base"
    base.mkdir(exist_ok=True)
    install_guestos(guestos_src, base)
    d = cmld_factory.start("--stop-timeout", "4", base=base)
    create(d, cmld_factory.tmp, "rb", ram_limit=64)
    assert start(d, "rb").rc == 0
    wait_state(d, "rb", "RUNNING")
    return d


def proc_stat(pid: int) -> tuple[str, int] | None:
    """(state, ppid), None if gone."""
    try:
        rest = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return rest[0], int(rest[1])


def cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def pids() -> list[int]:
    return [int(p) for p in os.listdir("/proc") if p.isdigit()]


def children_of(parent: int) -> list[int]:
    return [p for p in pids() if (st := proc_stat(p)) is not None and st[1] == parent]


def live(pid: int) -> bool:
    st = proc_stat(pid)
    return st is not None and st[0] not in ("Z", "X")


def wait_for(what: str, cond: object, timeout: float = 10) -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if callable(cond) and cond():
            return
        time.sleep(0.02)
    raise AssertionError(f"not within {timeout} s: {what}")


def session_procs(marker: str) -> list[int]:
    return [p for p in pids() if cmdline(p).strip() == marker and live(p)]


def stop_and_start_again(d: Daemon, name: str) -> None:
    t0 = time.monotonic()
    r = cli(d.socket, "stop", name)
    assert r.rc == 0, r.out + r.err
    wait_state(d, name, "STOPPED", timeout=15)
    assert time.monotonic() - t0 < 4 + 5, "the stop took longer than its timeout"
    assert start(d, name).rc == 0
    wait_state(d, name, "RUNNING")


# ---------------------------------------------------------------------- every child reaped


def test_orphan_reaper_on_its_own() -> None:
    """Real processes in a subreaper running the reaper: orphans of our namespace after the grace,
    never a claimed pid or one a thread waits for; an orphan in another PID namespace at once."""
    p = subprocess.run([sys.executable, str(HERE / "reaper_probe.py"), "--foreign"], capture_output=True,
                       text=True, timeout=60, check=False)
    assert p.returncode == 0, p.stderr
    out = json.loads(p.stdout)
    assert out["orphan_zombie_in_grace"] and out["orphan_reaped_after_grace"], out
    assert out["claimed_left_alone"], out
    assert out["owner_status"] == 7, out
    assert out["foreign_found"] and out["foreign_gone"] and out["foreign_gone_s"] < 1, out
    assert out["killed"] >= 1 and out["zombies_left"] == [], out


def test_run_client_killed_ends_its_session(running: Daemon) -> None:
    """The original binds a session to its connection: the client gone, the command goes too (its
    whole process group), nothing of it stays as a zombie of cmld, and the container still stops
    in time and starts again."""
    d = running
    marker = f"sleep {10**6 + secrets.randbelow(10**6)}"
    client = subprocess.Popen([str(BIN / "cml-control"), "-s", str(d.socket), "run", "rb", "nopty", "sh", "-c",
                               f"{marker}; echo never"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_for("the session's command runs", lambda: session_procs(marker))
        client.kill()
        client.wait(10)
        wait_for("the session's command is gone", lambda: not session_procs(marker))
        wait_for("no zombie child of cmld", lambda: not [p for p in children_of(d.proc.pid)
                                                         if proc_stat(p) == ("Z", d.proc.pid)], timeout=6)
    finally:
        if client.poll() is None:
            client.kill()
            client.wait()
    stop_and_start_again(d, "rb")


def test_killed_exec_helper_leaves_no_orphan(running: Daemon) -> None:
    """The exec helper itself SIGKILLed (as `halt`'s helper is when it times out): its half inside
    the container is re-parented to cmld, which kills it with its process group and reaps it. The
    client gets the end of its session; the container stops in time."""
    d = running
    marker = f"sleep {2 * 10**6 + secrets.randbelow(10**6)}"
    client = subprocess.Popen([str(BIN / "cml-control"), "-s", str(d.socket), "run", "rb", "nopty", "sh", "-c",
                               f"{marker}; echo never"], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    try:
        wait_for("the session's command runs", lambda: session_procs(marker))
        helpers = [p for p in children_of(d.proc.pid) if "cmld.launcher.execute" in cmdline(p)]
        assert len(helpers) == 1, [cmdline(p) for p in children_of(d.proc.pid)]
        inner = children_of(helpers[0])
        assert len(inner) == 1 and "cmld.launcher.execute" in cmdline(inner[0])
        os.kill(helpers[0], signal.SIGKILL)
        wait_for("the helper's half in the container is reaped", lambda: proc_stat(inner[0]) is None)
        wait_for("the session's command is gone", lambda: not session_procs(marker))
        client.wait(10)
        assert b"never" not in (client.stdout.read() if client.stdout else b"")
        assert re.search(rf"(killed|reaped) pid {inner[0]} \(orphan in a container's PID namespace", d.log_text())
    finally:
        if client.poll() is None:
            client.kill()
            client.wait()
    stop_and_start_again(d, "rb")


# ---------------------------------------------------------------------- the log


def test_newline_in_a_container_string_is_escaped(running: Daemon) -> None:
    d = running
    token = secrets.token_hex(4)
    r = run(d, "rb", "nopty", "sh", "-c", f"mknod \"$(printf '/tmp/a\\nFORGED-{token} x')\" c 1 1; echo rc=$?")
    assert "rc=1" in r.out, r.out + r.err
    wait_for("the refusal is logged", lambda: f"FORGED-{token}" in d.log_text())
    log = d.log_text()
    assert not [ln for ln in log.splitlines() if ln.startswith(f"FORGED-{token}")], log[-2000:]
    assert f" /tmp/a\\nFORGED-{token} x c 1:1 denied" in log, log[-2000:]


def test_refused_mknod_flood_is_rate_limited(running: Daemon) -> None:
    """500 refused mknod calls: at most the burst (20 lines) reaches the log, then one summary line
    with the count, within SUMMARY_AFTER (10 s)."""
    d = running
    before = len(d.log_text().splitlines())
    r = run(d, "rb", "nopty", "sh", "-c", "i=0; while [ $i -lt 500 ]; do mknod /tmp/m c 1 1 2>/dev/null; "
            "i=$((i+1)); done; echo done", timeout=60)
    assert "done" in r.out, r.out + r.err
    wait_for("the summary line", lambda: "'mknod' log line(s) suppressed" in d.log_text(), timeout=15)
    new = d.log_text().splitlines()[before:]
    denied = [ln for ln in new if "c 1:1 denied" in ln]
    assert 1 <= len(denied) <= 22, len(denied)
    summary = [ln for ln in new if "'mknod' log line(s) suppressed" in ln]
    m = re.search(r"container rb: (\d+) 'mknod' log line\(s\) suppressed", summary[0])
    assert m and int(m.group(1)) + len(denied) >= 490, summary


# ---------------------------------------------------------------------- the service socket


def test_service_socket_closes_abusive_connection(running: Daemon) -> None:
    d = running
    u = uuid_of(d, "rb")
    init = next(p for p in children_of(d.proc.pid) if u in Path(f"/proc/{p}/cgroup").read_text()
                and re.search(r"^NSpid:.*\s1$", Path(f"/proc/{p}/status").read_text(), re.M))
    path = f"/proc/{init}/root/run/socket/cml-service"
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(10)
    s.connect(path)
    frame = struct.pack(">I", 8) + b"\xff" * 8
    sent = 0
    t0 = time.monotonic()
    try:
        while sent < 100000:
            s.sendall(frame)
            sent += 1
            if sent == 50:  # the control socket answers while the frames arrive
                assert state(d, "rb") == "RUNNING"
    except (BrokenPipeError, ConnectionResetError):
        pass
    s.close()
    assert sent < 100000, "the connection was never closed"
    assert time.monotonic() - t0 < 10
    wait_for("the closing is logged", lambda: "malformed messages (last:" in d.log_text())
    assert state(d, "rb") == "RUNNING"


# ---------------------------------------------------------------------- cmld's terminal


def session_of(pid: int) -> int:
    return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[3])


def test_no_container_process_shares_cmlds_session(running: Daemon) -> None:
    """A controlling terminal belongs to a session: the container's init and an exec session's
    command are in sessions of their own, so neither can reach the terminal cmld runs on (TIOCSTI)
    nor gets a ^C meant for cmld."""
    d = running
    mine = session_of(d.proc.pid)
    u = uuid_of(d, "rb")
    init = next(p for p in children_of(d.proc.pid) if u in Path(f"/proc/{p}/cgroup").read_text())
    assert session_of(init) != mine
    marker = f"sleep {3 * 10**6 + secrets.randbelow(10**6)}"
    client = subprocess.Popen([str(BIN / "cml-control"), "-s", str(d.socket), "run", "rb", "nopty", "sh", "-c",
                               f"{marker}; echo never"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_for("the session's command runs", lambda: session_procs(marker))
        assert all(session_of(p) != mine for p in session_procs(marker))
    finally:
        client.kill()
        client.wait()
