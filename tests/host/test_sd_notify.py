"""Type=notify: each daemon tells systemd READY=1 once its socket serves, and STOPPING=1 on the way
out. A real datagram socket stands where systemd's notify socket would be."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from tests.host.swtpmlib import running_swtpm

pytestmark = pytest.mark.host
BIN = Path(sys.executable).parent


@pytest.mark.parametrize("daemon,kind", [("cmld", socket.SOCK_STREAM), ("scd", socket.SOCK_SEQPACKET),
                                         ("tpm2d", socket.SOCK_STREAM)])
def test_ready_and_stopping_are_notified(tmp_path: Path, daemon: str, kind: int) -> None:
    notify_path = tmp_path / "notify"
    notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    notify.bind(str(notify_path))
    notify.settimeout(15)
    (tmp_path / "base").mkdir()
    (tmp_path / "base" / "device.conf").write_text("hostedmode: true\nsigned_configs: false\n")
    sock = tmp_path / f"{daemon}.sock"
    env = dict(os.environ, NOTIFY_SOCKET=str(notify_path))
    stack = contextlib.ExitStack()
    extra: list[str] = []
    if daemon == "tpm2d":  # tpm2d needs a TPM: a private swtpm
        tpm = stack.enter_context(running_swtpm())
        extra = ["--tcti", tpm.tcti, "--attest-listen", "127.0.0.1:0", "--ml-state", str(tmp_path / "ml.json")]
    # No --foreground: under NOTIFY_SOCKET a daemon must stay in the foreground by itself.
    proc = subprocess.Popen([str(BIN / daemon), "--base-dir", str(tmp_path / "base"), "--socket", str(sock),
                             "--log-dir", str(tmp_path / "logs"), *extra], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        msg = notify.recv(4096).decode()
        assert "READY=1" in msg and f"STATUS=serving {sock}" in msg
        probe = socket.socket(socket.AF_UNIX, kind)
        probe.connect(str(sock))  # ready really means serving
        probe.close()
        assert proc.poll() is None
        proc.send_signal(signal.SIGTERM)
        assert "STOPPING=1" in notify.recv(4096).decode()
        assert proc.wait(10) == 0
        assert not sock.exists()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        notify.close()
        stack.close()
