"""Guest side of bench/crypt_volumes.py (not a test: figures, each beside its reference measured in
the same run):
1. start -> RUNNING of an encrypted container (soft token: PIN, unwrap in scd, the dm stack) against
   the same container without a token (plain volume); both already made, medians of RUNS;
2. sequential O_DIRECT write and read through the integrity+crypt stack against the raw loop
   device of a same-size file; the first format (zero fill) too;
3. start -> RUNNING with a dm-verity GuestOS against the same GuestOS hashed in full, and the
   full SHA-256 of the image against opening it with veritysetup."""

from __future__ import annotations

import mmap
import os
import socket
import statistics
import struct
import time
from pathlib import Path
from typing import Any

from . import ctl
from .common import must, sh

RUNS = 3
SIZE = 128 << 20
CHUNK = 4 << 20
WORK = Path("/var/lib/cml/containers/.bench")


def request_state(uuid: str) -> str:
    from cml_common.framing import encode_frame
    from cml_common.messages.container_pb2 import ContainerState
    from cml_common.messages.control_pb2 import ControllerToDaemon, DaemonToController

    msg = ControllerToDaemon(command=ControllerToDaemon.GET_CONTAINER_STATUS, container_uuids=[uuid])
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.connect(ctl.CONTROL)
        s.sendall(encode_frame(msg.SerializeToString()))
        n = struct.unpack(">I", ctl._recv(s, 4))[0]
        reply = DaemonToController.FromString(ctl._recv(s, n))
    return ContainerState.Name(reply.container_status[0].state) if reply.container_status else ""


def timed_start(name: str, uuid: str, pin: str | None) -> float:
    t0 = time.monotonic()
    ctl.request("CONTAINER_START", uuid, pin)
    while request_state(uuid) != "RUNNING":
        if time.monotonic() - t0 > 600:
            raise RuntimeError(f"{name} did not reach RUNNING")
        time.sleep(0.05)
    seconds = time.monotonic() - t0
    ctl.stop(name)
    ctl.wait_state(name, "STOPPED", 120)
    return seconds


def starts(name: str, guestos: str, kind: str) -> list[float]:
    uuid = ctl.create(name, ctl.container_conf(name, guestos=guestos, kind=kind))
    pin = None
    if kind == "SOFT":
        ctl.pair(name)
        pin = ctl.PIN
    ctl.start(name, pin)  # the first start makes (and formats) the volume: not measured
    ctl.wait_state(name, "RUNNING", 600)
    ctl.stop(name)
    ctl.wait_state(name, "STOPPED", 120)
    out = [timed_start(name, uuid, pin) for _ in range(RUNS)]
    sh("cml-control", "remove", name, timeout=120)
    return out


def throughput(dev: str) -> tuple[float, float]:
    """MiB/s of a sequential O_DIRECT write, then read, of the whole device."""
    buf = mmap.mmap(-1, CHUNK)
    buf.write(os.urandom(CHUNK))
    rates = []
    for flags in (os.O_WRONLY, os.O_RDONLY):
        fd = os.open(dev, flags | os.O_DIRECT)
        try:
            size = os.lseek(fd, 0, os.SEEK_END)
            t0 = time.monotonic()
            for off in range(0, size - CHUNK + 1, CHUNK):
                if flags == os.O_WRONLY:
                    os.pwritev(fd, [buf], off)
                else:
                    os.preadv(fd, [buf], off)
            if flags == os.O_WRONLY:
                os.fsync(fd)
            rates.append(size / (1 << 20) / (time.monotonic() - t0))
        finally:
            os.close(fd)
    buf.close()
    return rates[0], rates[1]


def stack_figures() -> dict[str, float]:
    from cml_common.messages.container_pb2 import CryptfsMode
    from cmld.crypt import fill, stack, tables

    WORK.mkdir(exist_ok=True)
    data, meta, raw = WORK / "data.img", WORK / "data.meta.img", WORK / "raw.img"
    for p, n in ((data, SIZE), (meta, tables.meta_size(SIZE)), (raw, SIZE)):
        with p.open("wb") as f:
            f.truncate(n)
    imgs = stack.StackImages("cml-bench", data, meta, CryptfsMode.INTEGRITY_ENCRYPT)
    top, _ = stack.open_stack(imgs, tables.split_key(CryptfsMode.INTEGRITY_ENCRYPT, os.urandom(96)))
    loop = must("losetup", "-f", "--show", "--direct-io=on", str(raw)).strip()
    try:
        t0 = time.monotonic()
        fill.zero_fill(str(top), lambda _d, _t: None)
        fmt = SIZE / (1 << 20) / (time.monotonic() - t0)
        t0 = time.monotonic()
        fill.zero_fill(loop, lambda _d, _t: None)
        fmt_raw = SIZE / (1 << 20) / (time.monotonic() - t0)
        sw, sr = throughput(str(top))
        rw, rr = throughput(loop)
    finally:
        stack.close_stack(imgs)
        sh("losetup", "-d", loop)
        for p in (data, meta, raw):
            p.unlink(missing_ok=True)
    return {"format_stack": fmt, "format_raw": fmt_raw, "write_stack": sw, "write_raw": rw, "read_stack": sr,
            "read_raw": rr}


def verity_open_vs_hash() -> dict[str, float]:
    import hashlib

    img = ctl.BASE / "operatingsystems" / "busyverity-1" / "root.img"
    cfg = (ctl.BASE / "operatingsystems" / "busyverity-1.conf").read_text()
    root_hash = ctl.field(cfg, "image_verity_sha256")
    opens, hashes = [], []
    for _ in range(RUNS):
        ctl.drop_caches()
        t0 = time.monotonic()
        hashlib.sha256(img.read_bytes()).hexdigest()
        hashes.append(time.monotonic() - t0)
        ctl.drop_caches()
        t0 = time.monotonic()
        must("veritysetup", "open", str(img), "cml-bench-verity", str(img.with_name("root.hash.img")), root_hash)
        opens.append(time.monotonic() - t0)
        must("veritysetup", "close", "cml-bench-verity")
    return {"verity_open": statistics.median(opens), "full_hash": statistics.median(hashes)}


def check() -> dict[str, Any]:
    return {
        "start_encrypted": starts("benc", "busybox", "SOFT"),
        "start_plain": starts("benp", "busybox", "NONE"),
        "start_verity": starts("benv", "busyverity", "NONE"),  # against start_plain: the full hash
        "image_bytes": (ctl.BASE / "operatingsystems" / "busybox-1" / "root.img").stat().st_size,
        **stack_figures(),
        **verity_open_vs_hash(),
    }
