"""Running `surfatk` (progs/surfatk.c) inside a container: the attacks on the surfaces added
after the first attack suite (the unprivileged control socket, FIFOs, NICs, uevents). The
program only carries bytes out and prints what the kernel and cmld answered; the tests judge."""

from __future__ import annotations

from pathlib import Path

from cml_common.framing import HEADER, serialize
from cml_common.messages.control_pb2 import ControllerToDaemon, DaemonToController

from ..conftest import Daemon
from .arena import Arena

SURFATK = "/tmp/surfatk"
INSIDE_SOCKET = "/run/socket/cml-control"


def put_surfatk(arena: Arena, container: str, *, d: Daemon | None = None, run_dir: Path | None = None) -> int:
    """Copies surfatk into the container's /tmp; returns the container's init PID."""
    pid = arena.init_pid(arena.uuid(container, d), run_dir)
    dst = Path(f"/proc/{pid}/root{SURFATK}")
    dst.write_bytes(arena.progs["surfatk"].read_bytes())
    dst.chmod(0o755)
    return pid


def surf(arena: Arena, container: str, *args: str, timeout: float = 60, d: Daemon | None = None) -> str:
    r = arena.exec(container, SURFATK, *args, timeout=timeout, d=d)
    assert r.rc == 0, f"surfatk {' '.join(args)[:200]}: rc {r.rc} {r.out[-1000:]} {r.err[-500:]}"
    return r.out


def frame(req: ControllerToDaemon) -> bytes:
    body = serialize(req)
    return HEADER.pack(len(body)) + body


def replies(out: str) -> list[DaemonToController]:
    """The framed replies surfatk printed as `reply HEX`."""
    data = b"".join(bytes.fromhex(ln.split()[1]) for ln in out.splitlines() if ln.startswith("reply "))
    got = []
    while len(data) >= HEADER.size:
        (n,) = HEADER.unpack_from(data)
        body, data = data[HEADER.size:HEADER.size + n], data[HEADER.size + n:]
        msg = DaemonToController()
        msg.ParseFromString(body)
        got.append(msg)
    return got


def answer(msg: DaemonToController) -> str:
    """A reply in one word: its code (RESPONSE) or its kind."""
    if msg.code == DaemonToController.RESPONSE:
        return DaemonToController.Response.Name(msg.response)
    return DaemonToController.Code.Name(msg.code)
