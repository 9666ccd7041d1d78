"""cmld as the arena runs it (through daemonwrap: own session, own session keyring, the unit's
oom_score_adj), its control socket without a CLI process per query, and what a cmld that went
away left on the host."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import time
from pathlib import Path

from cml_common.framing import parse, recv_frame, send_frame, serialize
from cml_common.messages.container_pb2 import ContainerState
from cml_common.messages.control_pb2 import ControllerToDaemon, DaemonToController

from ..conftest import BIN, HOSTED_DEVICE_CONF, Daemon, wait_for_socket
from ..testnet import TestNetns
from .host import CAP_SYS_RESOURCE, host_caps

# The systemd unit's OOMScoreAdjust. Lowering it needs CAP_SYS_RESOURCE; where root lacks that,
# cmld gets a positive value instead, which shows the inheritance just as well.
DAEMON_OOM_ADJ = "-900" if host_caps() >> CAP_SYS_RESOURCE & 1 else "500"


_HOMES: dict[Path, TestNetns] = {}


def home_netns(run_dir: Path) -> TestNetns:
    """The network namespace the cmld of `run_dir` runs in (its router in hosted mode)."""
    return _HOMES[run_dir]


def start_cmld(tmp: Path, base: Path, wrap: Path, *extra: str, name: str = "cmld", ctty: str | None = None,
               key: tuple[str, str] | None = None, oom: str = DAEMON_OOM_ADJ) -> Daemon:
    """cmld in the foreground through daemonwrap: new session (or `ctty` as its terminal), own
    session keyring with `key`, the unit's oom_score_adj. Stopped by PID."""
    sock = tmp / f"{name}.sock"
    log_dir = base.parent / f"{name}-logs"
    run_dir = tmp / f"{name}-run"
    netns_dir = tmp / f"{name}-netns"
    # cmld's own network namespace: the test's (one per run dir, so a restarted cmld recovers in it)
    home = _HOMES.get(run_dir) or _HOMES.setdefault(run_dir, TestNetns("cmla"))
    netns_dir.mkdir(parents=True, exist_ok=True)
    if not (base / "device.conf").exists():
        (base / "device.conf").write_text(HOSTED_DEVICE_CONF)
    cmd = [str(wrap)]
    if ctty:
        cmd += ["--ctty", ctty]
    if key:
        cmd += ["--key", *key]
    cmd += ["--oom", oom, "--", str(BIN / "cmld"), "--foreground", "--base-dir", str(base), "--socket", str(sock),
            "--log-dir", str(log_dir), "--scd-socket", str(tmp / "scd.sock"), "--tpm2d-socket",
            str(tmp / "tpm2d.sock"), "--run-dir", str(run_dir), "--netns-dir", str(netns_dir),
            "--netns", str(home.path), *extra]
    stderr_file = tmp / f"{name}.stderr"
    with stderr_file.open("ab") as err:
        proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=err, cwd="/")
    d = Daemon(proc, sock, base, log_dir)
    try:
        wait_for_socket(sock, proc, stderr_file=stderr_file, timeout=30)
    except BaseException:
        stop_daemon(d)
        raise
    return d


def stop_daemon(d: Daemon, timeout: float = 30) -> None:
    if d.proc.poll() is None:
        d.proc.send_signal(signal.SIGTERM)
        try:
            d.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            d.proc.kill()
            d.proc.wait(10)


def log_size(d: Daemon) -> int:
    return sum(p.stat().st_size for p in d.log_dir.glob("cml-*.2*"))


def control_status(sock: Path, timeout: float = 10.0) -> dict[str, str]:
    """name -> state over the control socket, without spawning a CLI (fast health check)."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(timeout)
        s.connect(str(sock))
        send_frame(s, serialize(ControllerToDaemon(command=ControllerToDaemon.GET_CONTAINER_STATUS)))
        body = recv_frame(s)
    if body is None:
        raise AssertionError("cmld closed the control connection without an answer")
    reply = parse(DaemonToController, body)
    return {c.name: ContainerState.Name(c.state) for c in reply.container_status}


def wait_for_state(d: Daemon, name: str, want: str, timeout: float = 30) -> None:
    """Polls the state over the control socket (no CLI process per poll)."""
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = control_status(d.socket).get(name)
        if last == want:
            return
        time.sleep(0.05)
    raise AssertionError(f"{name} stayed {last}, wanted {want}")


def host_leftovers(run_dir: Path, netns_dir: Path, uuids: list[str]) -> list[str]:
    """What containers of a stopped cmld left on the host (cgroups, netns bindings, mounts)."""
    found = []
    mounts = Path("/proc/self/mountinfo").read_text()
    for u in uuids:
        for ctrl in Path("/sys/fs/cgroup").iterdir():
            found += [f"cgroup {p}" for p in ctrl.glob(f"**/{u}")]
        if (netns_dir / u).exists():
            found.append(f"netns {netns_dir / u}")
        if any(u in line.split()[4] and str(netns_dir) not in line.split()[4] for line in mounts.splitlines()):
            found.append(f"mount of {u}")
        if (run_dir / "records" / f"{u}.json").exists():
            found.append(f"record {u}")
    return found


def clean_leftovers(run_dir: Path, netns_dir: Path, uuids: list[str]) -> None:
    """Removes what host_leftovers finds: kills what still runs in the groups, removes them,
    unmounts the netns bindings; then the network namespace the cmld of `run_dir` ran in."""
    try:
        _clean_groups_and_binds(netns_dir, uuids)
    finally:
        home = _HOMES.pop(run_dir, None)
        if home is not None:
            home.close()


def _clean_groups_and_binds(netns_dir: Path, uuids: list[str]) -> None:
    for u in uuids:
        for ctrl in Path("/sys/fs/cgroup").iterdir():
            for grp in sorted(ctrl.glob(f"**/{u}"), key=lambda p: -len(p.parts)):
                for sub in [*sorted(grp.rglob("*"), key=lambda p: -len(p.parts)), grp]:
                    if not sub.is_dir():
                        continue
                    with contextlib.suppress(OSError):
                        for pid in (sub / "cgroup.procs").read_text().split():
                            with contextlib.suppress(ProcessLookupError):
                                os.kill(int(pid), signal.SIGKILL)
                    for _ in range(50):
                        try:
                            sub.rmdir()
                            break
                        except FileNotFoundError:
                            break
                        except OSError:
                            time.sleep(0.05)
        ns = netns_dir / u
        if ns.exists():
            subprocess.run(["umount", "-l", str(ns)], capture_output=True, check=False)
            with contextlib.suppress(OSError):
                ns.unlink()
