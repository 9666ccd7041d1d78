"""Shared fixtures: real daemons as processes on a temp base directory, and a CLI runner."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.testnet import TestNetns

BIN = Path(sys.executable).parent
HOSTED_DEVICE_CONF = "hostedmode: true\nsigned_configs: false\ntpm_enabled: false\n"


def wait_for_socket(path: Path, proc: subprocess.Popen[bytes], kind: int = socket.SOCK_STREAM,
                    timeout: float = 30.0, stderr_file: Path | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            out = stderr_file.read_text(errors="replace") if stderr_file and stderr_file.exists() else ""
            raise RuntimeError(f"daemon exited with {proc.returncode}: {out}")
        s = socket.socket(socket.AF_UNIX, kind)
        try:
            s.connect(str(path))
            return
        except OSError:
            time.sleep(0.02)
        finally:
            s.close()
    raise TimeoutError(f"{path} did not come up")


@dataclass
class Daemon:
    """A daemon process started by a test; stopped by PID at teardown."""

    proc: subprocess.Popen[bytes]
    socket: Path
    base: Path
    log_dir: Path

    def alive(self) -> bool:
        return self.proc.poll() is None

    def stop(self) -> int:
        """SIGTERM, then SIGKILL after 30 s (cmld stops its containers first, up to --stop-timeout
        + 2 s); returns the exit status."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
        return self.proc.wait(5)

    def log_text(self) -> str:
        return "\n".join(p.read_text(errors="replace") for p in sorted(self.log_dir.glob("cml-*.2*")))


@dataclass
class DaemonFactory:
    """Starts cmld, scd and tpm2d on sockets inside the test's tmp dir and stops them all. Every
    cmld runs in a network namespace of the test's own (`--netns`), made on first use and shared
    by the cmlds of one test (a restarted cmld finds what the previous one left)."""

    tmp: Path
    started: list[Daemon] = field(default_factory=list)
    netns: TestNetns | None = None

    def cmld_netns(self) -> TestNetns:
        if self.netns is None:
            self.netns = TestNetns()
        return self.netns

    def launch(self, prog: str, name: str, *extra: str, base: Path | None = None,
               kind: int = socket.SOCK_STREAM, env: dict[str, str] | None = None) -> Daemon:
        base = base or self.tmp / f"{name}-base"
        base.mkdir(parents=True, exist_ok=True)
        sock = self.tmp / f"{name}.sock"
        log_dir = self.tmp / f"{name}-logs"
        stderr_file = self.tmp / f"{name}.stderr"
        cmd = [str(BIN / prog), "--foreground", "--base-dir", str(base), "--socket", str(sock),
               "--log-dir", str(log_dir), *extra]
        if prog == "cmld" and "--netns" not in extra:
            cmd += ["--netns", str(self.cmld_netns().path)]
        # stderr goes to a file: a pipe nobody drains would block a daemon that logs a lot.
        with stderr_file.open("ab") as err:
            proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=err,
                                    env={**os.environ, **env} if env else None)
        d = Daemon(proc, sock, base, log_dir)
        self.started.append(d)
        wait_for_socket(sock, proc, kind, stderr_file=stderr_file)
        return d

    def start(self, *extra: str, device_conf: str | None = HOSTED_DEVICE_CONF, base: Path | None = None,
              name: str = "cmld", env: dict[str, str] | None = None) -> Daemon:
        """cmld, in hosted mode by default, pointed at scd/tpm2d sockets in the tmp dir."""
        base = base or self.tmp / f"{name}-base"
        base.mkdir(parents=True, exist_ok=True)
        if device_conf is not None and not (base / "device.conf").exists():
            (base / "device.conf").write_text(device_conf)
        # Own run dir: a cmld recovers (stops) whatever containers its run dir records.
        return self.launch("cmld", name, "--scd-socket", str(self.tmp / "scd.sock"),
                           "--tpm2d-socket", str(self.tmp / "tpm2d.sock"), "--run-dir", str(self.tmp / f"{name}-run"),
                           *extra, base=base, env=env)

    def stop_all(self) -> None:
        for d in self.started:
            d.stop()
        if self.netns is not None:
            self.netns.close()
            self.netns = None


@pytest.fixture
def cmld_factory(tmp_path: Path) -> Iterator[DaemonFactory]:
    f = DaemonFactory(tmp_path)
    try:
        yield f
    finally:
        f.stop_all()


@pytest.fixture
def cmld(cmld_factory: DaemonFactory) -> Daemon:
    return cmld_factory.start()


@dataclass
class CliResult:
    rc: int
    out: str
    err: str


def cli(sock: Path, *args: str, stdin: str | None = None, timeout: float = 30) -> CliResult:
    env = dict(os.environ)
    p = subprocess.run([str(BIN / "cml-control"), "-s", str(sock), *args], input=stdin,
                       capture_output=True, text=True, timeout=timeout, env=env, check=False)
    return CliResult(p.returncode, p.stdout, p.stderr)


def is_root() -> bool:
    return os.geteuid() == 0


# Test files whose cmlds run c0 (device mode): see pytest_xdist_make_scheduler.
C0_TEST_FILES = ("tests/host/test_c0.py", "tests/host/test_c0_network.py", "tests/host/test_c0_network_allow.py",
                 "tests/host/test_device_operations.py")


def pytest_xdist_make_scheduler(config: pytest.Config, log: object) -> object | None:
    """Under `--dist loadgroup`, every test in tests/vm/ goes to one worker: the VM tier builds
    and boots once per session and takes both cores' worth of TCG, so it must not run twice.
    The same for the c0 tests (see below).
    (xdist's own xdist_group marker relies on rewriting Item._nodeid, which pytest 9 ignores.)"""
    if config.getvalue("dist") != "loadgroup":
        return None
    from xdist.scheduler import LoadGroupScheduling

    class VmGroupScheduling(LoadGroupScheduling):  # type: ignore[misc]
        def _split_scope(self, nodeid: str) -> str:
            # c0 has one fixed UUID, so two cmlds running c0 at once would share its cgroup
            # name: every test file that starts c0 runs on one worker.
            if nodeid.startswith("tests/vm/"):
                return "tests/vm/"
            if nodeid.startswith(C0_TEST_FILES):
                return "c0"
            return super()._split_scope(nodeid)

    return VmGroupScheduling(config, log)
