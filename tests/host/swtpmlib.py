"""A private swtpm for one test module (or one benchmark): state in a temp dir, TCP on loopback
only, stopped by PID and its state removed on every path.

The TCTI string it hands out is the tpm2-tools syntax (`swtpm:host=127.0.0.1,port=N`), so the
same string works for tpm2d's `--tcti`, for tpm2-pytss and for `tpm2_*` (TPM2TOOLS_TCTI).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path


@dataclass
class Swtpm:
    proc: subprocess.Popen[bytes]
    port: int
    state: Path

    @property
    def tcti(self) -> str:
        return f"swtpm:host=127.0.0.1,port={self.port}"

    def tools_env(self) -> dict[str, str]:
        """Environment for tpm2-tools against this swtpm."""
        return {**os.environ, "TPM2TOOLS_TCTI": self.tcti}

    def tool(self, *argv: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        r = subprocess.run(list(argv), env=self.tools_env(), capture_output=True, text=True, timeout=60)
        if check and r.returncode != 0:
            raise RuntimeError(f"{' '.join(argv)} failed ({r.returncode}): {r.stderr.strip()}")
        return r


def _free_port_pair() -> int:
    """A port P with P and P+1 free on 127.0.0.1 (swtpm's server and control channels)."""
    for _ in range(50):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        if port >= 65535:
            continue
        try:
            with socket.socket() as s2:
                s2.bind(("127.0.0.1", port + 1))
        except OSError:
            continue
        return int(port)
    raise RuntimeError("no free pair of loopback ports for swtpm")


def _wait_listening(port: int, proc: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"swtpm exited ({proc.returncode}): {log.read_text(errors='replace')}")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=0.2):
            return
        time.sleep(0.02)
    raise RuntimeError(f"swtpm did not listen on 127.0.0.1:{port}: {log.read_text(errors='replace')}")


def stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


@contextlib.contextmanager
def running_swtpm(state_dir: Path | None = None) -> Iterator[Swtpm]:
    """Start a fresh swtpm (TPM 2.0, started up and cleared) and stop it on exit."""
    own = state_dir is None
    state = Path(tempfile.mkdtemp(prefix="cml-swtpm-")) if state_dir is None else state_dir
    state.mkdir(parents=True, exist_ok=True)
    log = state / "swtpm.log"
    proc: subprocess.Popen[bytes] | None = None
    try:
        for _attempt in range(5):
            port = _free_port_pair()
            with log.open("ab") as lf:
                proc = subprocess.Popen(
                    ["swtpm", "socket", "--tpm2", "--tpmstate", f"dir={state}",
                     "--server", f"type=tcp,port={port},bindaddr=127.0.0.1",
                     "--ctrl", f"type=tcp,port={port + 1},bindaddr=127.0.0.1",
                     "--flags", "not-need-init,startup-clear"],
                    stdin=subprocess.DEVNULL, stdout=lf, stderr=lf)
            try:
                _wait_listening(port, proc, log)
            except RuntimeError:
                stop(proc)
                proc = None
                continue
            yield Swtpm(proc, port, state)
            return
        raise RuntimeError(f"swtpm could not start: {log.read_text(errors='replace')}")
    finally:
        if proc is not None:
            stop(proc)
        if own:
            shutil.rmtree(state, ignore_errors=True)
