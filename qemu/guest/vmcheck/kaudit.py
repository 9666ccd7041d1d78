"""cmld as the kernel's audit daemon (device.conf `audit_kernel: true` in this guest): the
kernel's own record of cmld's registration (CONFIG_CHANGE audit_pid=<cmld>), a user message sent
over NETLINK_AUDIT by this check, and dm-integrity's checksum failure (DM_EVENT, CONFIG_DM_AUDIT)
on a device made with integritysetup whose backing file had one data block changed underneath:
each has to come back from `cml-control audit --json` as a record of cmld's journal."""

from __future__ import annotations

import contextlib
import errno
import json
import mmap
import os
import socket
import struct
import time
from pathlib import Path
from typing import Any

from .common import CheckFailed, must, sh

BACKING = Path("/var/tmp/kaudit-integrity.img")  # noqa: S108 (the throwaway guest)
NAME = "vmtest-kaudit"
SIZE = 16 << 20
BLOCK = 4096
AT = 2 << 20  # where in the mapped device the marked block is written


def records() -> list[dict[str, Any]]:
    out = must("cml-control", "audit", "--json", timeout=60)
    return [e for e in (json.loads(ln) for ln in out.splitlines() if ln.startswith("{")) if e.get("kind") == "record"]


def wait_for(pred: Any, timeout: float = 60) -> dict[str, Any] | None:
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        hit = next((r for r in records() if pred(r)), None)
        if hit is not None:
            return hit
        time.sleep(2)
    return None


def send_user_message(text: str) -> int:
    """AUDIT_USER (1005) as libaudit's audit_log_user_message sends it; the kernel's errno (0: ACK)."""
    s = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, 9)
    try:
        s.bind((0, 0))
        body = text.encode() + b"\0"
        s.send(struct.pack("=IHHII", 16 + len(body), 1005, 0x1 | 0x4, 1, 0) + body)
        s.settimeout(10)
        reply = s.recv(8192)
        _, mtype, _, _, _ = struct.unpack_from("=IHHII", reply)
        return -struct.unpack_from("=i", reply, 16)[0] if mtype == 2 else -1
    finally:
        s.close()


def read_direct(dev: str, offset: int) -> str:
    fd = os.open(dev, os.O_RDONLY | os.O_DIRECT)
    buf = mmap.mmap(-1, BLOCK)
    try:
        os.preadv(fd, [buf], offset)
        return "ok"
    except OSError as e:
        return errno.errorcode.get(e.errno or 0, str(e.errno))
    finally:
        buf.close()
        os.close(fd)


def integrity_failure(data: dict[str, Any]) -> None:
    must("modprobe", "-a", "dm-integrity", "loop")
    BACKING.parent.mkdir(parents=True, exist_ok=True)
    with BACKING.open("wb") as f:
        f.truncate(SIZE)
    loop = must("losetup", "-f", "--show", str(BACKING)).strip()
    mapper = f"/dev/mapper/{NAME}"
    try:
        must("integritysetup", "format", "--batch-mode", "--sector-size", str(BLOCK), loop, timeout=300)
        must("integritysetup", "open", "--integrity-no-journal", loop, NAME)
        marker = (b"cml-kaudit-marker" * 256)[:BLOCK]
        fd = os.open(mapper, os.O_WRONLY)
        try:
            os.pwrite(fd, marker, AT)
            os.fsync(fd)
        finally:
            os.close(fd)
        must("integritysetup", "close", NAME)
        raw = BACKING.read_bytes()
        where = raw.rfind(marker)  # the data area is after the journal
        data["marker_in_backing_at"] = where
        if where < 0:
            raise CheckFailed("the written block is not in the backing file as written", data)
        with BACKING.open("r+b") as f:
            f.seek(where + 100)
            f.write(b"X")
            f.flush()
            os.fsync(f.fileno())
        must("integritysetup", "open", loop, NAME)
        data["dm_dev"] = must("dmsetup", "info", "-c", "--noheadings", "-o", "major,minor", NAME).strip()
        data["read_tampered"] = read_direct(mapper, AT)
    finally:
        sh("integritysetup", "close", NAME)
        sh("losetup", "-d", loop)
        with contextlib.suppress(OSError):
            BACKING.unlink()


def check() -> dict[str, Any]:
    data: dict[str, Any] = {}
    try:
        cmld_pid = sh("systemctl", "show", "-p", "MainPID", "--value", "cmld.service").out.strip()
        data["cmld_pid"] = cmld_pid
        reg = wait_for(lambda r: r["type"].endswith("KAUDIT.CONFIG_CHANGE")
                       and r["meta"].get("audit_pid") == cmld_pid, 30)
        data["registration"] = reg
        probe = f"cml-vmcheck kernel audit probe {os.urandom(6).hex()}"
        data["user_send_errno"] = send_user_message(probe)
        data["user"] = wait_for(lambda r: probe in r["meta"].get("msg", ""), 60)
        integrity_failure(data)
        data["dm_audit"] = wait_for(lambda r: r["type"].endswith("CONTAINER_MGMT.dm-audit")
                                    and r["meta"].get("label") == NAME, 60)
        data["kernel_log"] = [ln for ln in sh("dmesg").out.splitlines() if "integrity" in ln.lower()][-3:]
        return data
    except CheckFailed as e:
        e.data.update(data)
        raise
    finally:
        full = sh("journalctl", "-b", "-u", "cmld", "-o", "cat", "-n", "400").text
        data["cmld_kernel_audit_log"] = [ln for ln in full.splitlines() if "kernel audit" in ln][-5:]
