"""The VM tier's guestfwd relay (qemu/cmlvm/relay.py), run here on the loopback as QEMU runs it:
one process per guest connection with the connection on stdin/stdout. What the VM network test
needs from it: the guest's request reaches the host server whole, the guest's half-close reaches
it too, the server's close ends the relay (QEMU turns that into the guest's FIN), and a second
connection gets a second answer (QEMU's `tcp:` chardev form had none of these)."""

from __future__ import annotations

import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
RELAY = REPO / "qemu" / "cmlvm" / "relay.py"
sys.path.insert(0, str(REPO / "qemu"))

from cmlvm import runner  # noqa: E402
from cmlvm.tools import ToolError  # noqa: E402

pytestmark = pytest.mark.unit
REQUEST = b"GET /mark HTTP/1.0\r\n\r\n"


@pytest.fixture
def until_eof_server() -> Iterator[tuple[int, list[bytes]]]:
    """Answers only after the client's half-close (reads to EOF first), then closes."""
    seen: list[bytes] = []
    lsock = socket.create_server(("127.0.0.1", 0))

    def serve() -> None:
        while True:
            try:
                conn, _ = lsock.accept()
            except OSError:
                return
            with conn:
                got = b""
                while chunk := conn.recv(4096):
                    got += chunk
                seen.append(got)
                conn.sendall(b"answer %d to " % len(seen) + got)

    t = threading.Thread(target=serve, daemon=True)
    t.start()
    try:
        yield lsock.getsockname()[1], seen
    finally:
        lsock.close()


def relay(port: int, data: bytes) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run([sys.executable, str(RELAY), str(port)], input=data, capture_output=True, timeout=20,
                          check=False)


def test_half_close_and_server_close_pass_through_and_each_connection_is_its_own(
        until_eof_server: tuple[int, list[bytes]]) -> None:
    port, seen = until_eof_server
    first = relay(port, REQUEST)
    second = relay(port, b"x" * 200000)
    assert first.returncode == 0 and first.stdout == b"answer 1 to " + REQUEST, first
    assert second.returncode == 0 and second.stdout == b"answer 2 to " + b"x" * 200000, second.stderr
    assert seen == [REQUEST, b"x" * 200000]


def test_no_server_is_an_error_not_a_hang() -> None:
    with socket.create_server(("127.0.0.1", 0)) as s:
        port = s.getsockname()[1]
    r = relay(port, REQUEST)
    assert r.returncode != 0 and b"ConnectionRefusedError" in r.stderr and r.stdout == b""


def test_guestfwd_option_names_the_relay_per_connection() -> None:
    nic = runner.ExtraNic.to_host_port("52:54:00:c1:00:02", "10.0.3.0/24", "10.0.3.100", 8080, 4242)
    assert nic.guestfwd == f"tcp:10.0.3.100:8080-cmd:{sys.executable} {RELAY} 4242"
    argv = runner.net_argv({}, (nic,))
    assert argv[1] == f"user,id=x1,restrict=on,net=10.0.3.0/24,guestfwd={nic.guestfwd}"


def test_a_path_qemu_would_split_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sys, "executable", "/opt/my python/bin/python3")
    with pytest.raises(ToolError, match="comma or space"):
        runner.ExtraNic.to_host_port("52:54:00:c1:00:02", "10.0.3.0/24", "10.0.3.100", 8080, 1)
