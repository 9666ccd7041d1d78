"""dm-crypt over dm-integrity with the cryptsetup tools (LUKS2 + hmac-sha256 integrity, pbkdf2
with few iterations: argon2 costs ~17 s under TCG): write, read back, tamper one sector of the
backing device underneath, reopen, and record how the read fails."""

from __future__ import annotations

import contextlib
import errno
import hashlib
import mmap
import os
import time
from pathlib import Path
from typing import Any

from .common import CheckFailed, must, sh

BACKING = Path("/var/tmp/dm-test.img")  # noqa: S108 (a throwaway guest)  # noqa: S108 (the throwaway guest)
KEY = Path("/run/dm-test.key")
NAME = "vmtest-crypt"
SIZE = 48 << 20
TAMPER_AT = 40 << 20  # well past the 16 MiB LUKS2 header and the integrity journal
PAYLOAD = 1 << 20
CHUNK = 64 << 10


def read_all(dev: str, direct: bool) -> dict[str, Any]:
    """Read the whole device in 64 KiB chunks; where and with which errno the first read fails."""
    flags = os.O_RDONLY | (os.O_DIRECT if direct else 0)
    fd = os.open(dev, flags)
    buf = mmap.mmap(-1, CHUNK)  # page-aligned, as O_DIRECT needs
    off = 0
    try:
        while True:
            try:
                n = os.preadv(fd, [buf], off)
            except OSError as e:
                return {"ok": False, "offset": off, "errno": errno.errorcode.get(e.errno or 0, str(e.errno)),
                        "error": e.strerror}
            if n == 0:
                return {"ok": True, "bytes": off}
            off += n
    finally:
        buf.close()
        os.close(fd)


def check() -> dict[str, Any]:
    data: dict[str, Any] = {}
    t0 = time.monotonic()
    must("modprobe", "-a", "dm-crypt", "dm-integrity", "loop")
    BACKING.parent.mkdir(parents=True, exist_ok=True)
    with BACKING.open("wb") as f:
        f.truncate(SIZE)
    KEY.write_bytes(os.urandom(32))
    loop = must("losetup", "-f", "--show", str(BACKING)).strip()
    mapper = f"/dev/mapper/{NAME}"
    try:
        must("cryptsetup", "luksFormat", "--batch-mode", "--type", "luks2", "--integrity", "hmac-sha256",
             "--pbkdf", "pbkdf2", "--pbkdf-force-iterations", "1000", "--key-file", str(KEY), loop, timeout=300)
        data["format_seconds"] = round(time.monotonic() - t0, 1)
        must("cryptsetup", "open", "--key-file", str(KEY), loop, NAME)
        data["tables"] = must("dmsetup", "table").strip().splitlines()
        payload = os.urandom(PAYLOAD)
        fd = os.open(mapper, os.O_WRONLY)
        try:
            os.pwrite(fd, payload, 1 << 20)
            os.fsync(fd)
        finally:
            os.close(fd)
        fd = os.open(mapper, os.O_RDONLY)
        try:
            back = os.pread(fd, PAYLOAD, 1 << 20)
        finally:
            os.close(fd)
        data["read_back_matches"] = hashlib.sha256(back).digest() == hashlib.sha256(payload).digest()
        data["read_before"] = read_all(mapper, direct=False)
        must("cryptsetup", "close", NAME)
        with BACKING.open("r+b") as f:
            f.seek(TAMPER_AT)
            sector = f.read(512)
            f.seek(TAMPER_AT)
            f.write(bytes(b ^ 0xFF for b in sector))
            f.flush()
            os.fsync(f.fileno())
        Path("/proc/sys/vm/drop_caches").write_text("3")
        data["tampered_offset"] = TAMPER_AT
        must("cryptsetup", "open", "--key-file", str(KEY), loop, NAME)
        data["read_after"] = read_all(mapper, direct=False)
        data["read_after_direct"] = read_all(mapper, direct=True)
        data["kernel_log"] = [ln for ln in sh("dmesg").out.splitlines() if "integrity" in ln.lower()][-5:]
        data["seconds"] = round(time.monotonic() - t0, 1)
        return data
    except CheckFailed as e:
        e.data.update(data)
        raise
    finally:
        sh("cryptsetup", "close", NAME)
        sh("losetup", "-d", loop)
        with contextlib.suppress(OSError):
            BACKING.unlink()
        KEY.unlink(missing_ok=True)
