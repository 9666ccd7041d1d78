"""Guest side: driving cmld as an operator does (cml-control) and looking at what it made
(dm devices, loop devices, its journal). Starts that must be timed precisely go straight to the
control socket (a `cml-control` process takes seconds to start under TCG)."""

from __future__ import annotations

import os
import re
import socket
import struct
import time
from pathlib import Path

from .common import CheckFailed, Out, must, sh

BASE = Path("/var/lib/cml")
CONTROL = "/run/socket/cml-control"
PIN = "vm-pin-4711"
TRANSPORT_PIN = "trustme"


def field(out: str, name: str) -> str:
    m = re.search(rf"^\s*{name}:\s*\"?([^\"\n]*)\"?\s*$", out, re.MULTILINE)
    return m.group(1) if m else ""


def state(name: str) -> str:
    return field(sh("cml-control", "state", name, timeout=60).out, "state")


def status(name: str) -> str:
    return sh("cml-control", "state", name, timeout=60).out


def wait_state(name: str, want: str | tuple[str, ...], timeout: float) -> tuple[str, float]:
    wants = (want,) if isinstance(want, str) else want
    t0 = time.monotonic()
    last = ""
    while time.monotonic() - t0 < timeout:
        last = state(name)
        if last in wants:
            break
        time.sleep(0.5)
    return last, round(time.monotonic() - t0, 1)


def container_conf(name: str, guestos: str = "busybox", kind: str = "SOFT", data_mb: int = 16) -> str:
    return (f'name: "{name}"\nguest_os: "{guestos}"\ncolor: 0\ntype: CONTAINER\ntoken_type: {kind}\n'
            f'ram_limit: 64\nimage_sizes {{ image_name: "data" image_size: {data_mb} }}\n')


def create(name: str, conf: str) -> str:
    path = Path(f"/run/{name}.conf")
    path.write_text(conf)
    try:
        must("cml-control", "create", str(path), timeout=120)
    finally:
        path.unlink(missing_ok=True)
    uuid = field(status(name), "uuid")
    if not uuid:
        raise CheckFailed(f"created {name}, but cml-control state does not show it")
    return uuid


def pair(name: str) -> Out:
    """The first PIN change pairs the soft token with the device (transport PIN -> ours)."""
    return sh("cml-control", "change_pin", name, stdin=f"{TRANSPORT_PIN}\n{PIN}\n{PIN}\n", timeout=120)


def start(name: str, pin: str | None = PIN, timeout: float = 600) -> Out:
    return sh("cml-control", "start", name, *([f"--key={pin}"] if pin else []), timeout=timeout)


def stop(name: str, pin: str | None = PIN) -> Out:
    """Stop (with the PIN for a token container: cml-control asks for it, as the original client)."""
    return sh("cml-control", "stop", name, *([f"--key={pin}"] if pin else []), timeout=120)


def run_in(name: str, script: str, timeout: float = 120) -> Out:
    return sh("cml-control", "run", name, "nopty", "sh", "-c", script, timeout=timeout)


def cursor() -> str:
    out = sh("journalctl", "-u", "cmld", "-n", "0", "--show-cursor", "-o", "cat").out
    m = re.search(r"-- cursor: (\S+)", out)
    return m.group(1) if m else ""


def log_since(cur: str) -> list[str]:
    args = ["journalctl", "-u", "cmld", "--no-pager", "-o", "cat"] + ([f"--after-cursor={cur}"] if cur else [])
    return sh(*args, timeout=60).out.splitlines()


def dm_devices(prefix: str = "") -> list[str]:
    names = []
    for d in sorted(Path("/sys/block").glob("dm-*")):
        name = (d / "dm" / "name").read_text().strip()
        if name.startswith(prefix):
            names.append(name)
    return names


def dm_tables(prefix: str) -> dict[str, str]:
    """`dmsetup table` per device (dmsetup shows keys as zeroes)."""
    return {n: must("dmsetup", "table", n).strip() for n in dm_devices(prefix)}


def loops_on(directory: Path) -> list[str]:
    out = []
    for loop in sorted(Path("/sys/block").glob("loop*")):
        f = loop / "loop" / "backing_file"
        if f.exists() and f.read_text().strip().startswith(str(directory)):
            out.append(f"{loop.name}: {f.read_text().strip()}")
    return out


def cmld_pid() -> int:
    return int(sh("systemctl", "show", "-p", "MainPID", "--value", "cmld.service").out.strip() or 0)


def kill_cmld_and_wait(timeout: float = 120) -> float:
    """SIGKILL to cmld's main process; systemd restarts it (Restart=on-failure). Returns once the
    new cmld answers, with the seconds it took."""
    old = cmld_pid()
    if old <= 0:
        raise CheckFailed("cmld is not running")
    os.kill(old, 9)
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        pid = cmld_pid()
        if pid not in (0, old) and sh("systemctl", "is-active", "cmld").out.strip() == "active" and \
                sh("cml-control", "list", timeout=60).rc == 0:
            return round(time.monotonic() - t0, 1)
        time.sleep(0.5)
    sh("systemctl", "reset-failed", "cmld")
    raise CheckFailed(f"cmld did not come back within {timeout:g} s after SIGKILL: "
                      f"{sh('systemctl', 'status', '--no-pager', 'cmld').text[-1500:]}")


def request(command: str, uuid: str, pin: str | None = None, timeout: float = 600) -> str:
    """One request straight on the control socket; returns the reply's `response` name."""
    from cml_common.framing import encode_frame
    from cml_common.messages.control_pb2 import ControllerToDaemon, DaemonToController

    msg = ControllerToDaemon(command=command, container_uuids=[uuid])
    if pin is not None:
        msg.container_start_params.key = pin
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(timeout)
        s.connect(CONTROL)
        s.sendall(encode_frame(msg.SerializeToString()))
        head = _recv(s, 4)
        reply = DaemonToController.FromString(_recv(s, struct.unpack(">I", head)[0]))
    return DaemonToController.Response.Name(reply.response)


def _recv(s: socket.socket, n: int) -> bytes:
    buf = b""
    while len(buf) < n:
        chunk = s.recv(n - len(buf))
        if not chunk:
            raise CheckFailed("cmld closed the control connection")
        buf += chunk
    return buf


def drop_caches() -> None:
    os.sync()
    Path("/proc/sys/vm/drop_caches").write_text("3")


def file_offset(fs_image: str, path: str) -> int:
    """Byte offset of the first block of `path` in an ext4 image or device (debugfs)."""
    blocks = sh("debugfs", "-R", f"blocks {path}", fs_image).out.split()
    size = re.search(r"^Block size:\s*(\d+)", sh("debugfs", "-R", "stats", fs_image).out, re.M)
    if not blocks or size is None:
        raise CheckFailed(f"debugfs found no blocks of {path} (or no block size) in {fs_image}")
    return int(blocks[0]) * int(size.group(1))


def note(message: str) -> None:
    """Progress on the console (a hanging check shows where it is)."""
    print(f"CML-CHECK   {message}", flush=True)


def flip_byte(path: Path, offset: int) -> None:
    with path.open("r+b") as f:
        f.seek(offset)
        b = f.read(1)
        f.seek(offset)
        f.write(bytes([b[0] ^ 0xFF]))
        f.flush()
        os.fsync(f.fileno())
