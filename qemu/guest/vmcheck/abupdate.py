"""The A/B boot-slot update on real firmware (OVMF): the guest boots from its ESP through the
firmware's boot manager (no -kernel), cmld runs with --a-b-update. One check per boot; the boot
before the first (cmld's set-up, which reboots at once) runs none (see tests/vm/conftest.py):

    slot_a    booted by Boot0000 "GyroidosA" (the entries cmld wrote on the boot before), set-up
              complete, c0 up; a signed `kernel` update (a UKI with a marker on its command
              line) goes to slot B's file, BootNext = 0001
    slot_b    the firmware booted Boot0001 once: the marker is on /proc/cmdline, BootNext is
              gone, c0 up makes 0001 first in BootOrder; a broken kernel update (no PE image)
              goes to slot A's file, BootNext = 0000
    fallback  the firmware could not start slot A and went by BootOrder: slot B again, the
              marker kernel, BootOrder unchanged, and cmld says so; then a kernel update that the
              firmware starts but that panics at once goes to slot A, BootNext = 0000
    (a boot of slot A that panics and reboots: no check)
    fallback_panic  BootNext was spent on the boot that panicked; the firmware went by BootOrder:
              slot B again, the marker kernel, and cmld says slot A's update did not boot

The EFI variables are read from efivarfs and decoded here from the UEFI spec (not with cmld's
code), and shown as efibootmgr shows them. What the host expects (the ESP's partition GUID, the
images' hashes, the marker) is in `<share>/extra/expect.json`.
"""

from __future__ import annotations

import hashlib
import json
import re
import struct
import time
import traceback
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

from . import common, ctl
from .common import CheckFailed, sh

EFIVARS = Path("/sys/firmware/efi/efivars")
GLOBAL = "8be4df61-93ca-11d2-aa0d-00e098032b8c"
ESP = Path("/boot")
KERNEL_A = ESP / "EFI" / "BOOT" / "BOOTX64.EFI"
KERNEL_B = ESP / "EFI" / "BOOT" / "BOOTX64.EFI.B"
CML = Path("/var/lib/cml")


def expect() -> dict[str, Any]:
    data: dict[str, Any] = json.loads((common.SHARE / "extra" / "expect.json").read_text())
    return data


def var(name: str) -> bytes | None:
    p = EFIVARS / f"{name}-{GLOBAL}"
    return p.read_bytes()[4:] if p.exists() else None


def u16(name: str) -> int | None:
    raw = var(name)
    return None if raw is None else int(struct.unpack("<H", raw[:2])[0])


def device_path(dp: bytes) -> str:
    """The nodes efibootmgr names (HD, File, Fv, FvFile, PCI root and device); others as type/subtype."""
    out, i = [], 0
    while i + 4 <= len(dp):
        typ, sub, length = struct.unpack_from("<BBH", dp, i)
        body = dp[i + 4:i + length]
        if length < 4 or (typ, sub) == (0x7F, 0xFF):
            break
        if (typ, sub) == (4, 1):
            num, start, size, sig, _fmt, _sigtype = struct.unpack("<IQQ16sBB", body)
            out.append(f"HD({num},GPT,{uuid.UUID(bytes_le=sig)},{start:#x},{size:#x})")
        elif (typ, sub) == (4, 4):
            out.append(f"File({body.decode('utf-16-le', errors='replace').rstrip(chr(0))})")
        elif (typ, sub) in ((4, 6), (4, 7)) and len(body) == 16:  # firmware volume / file in it
            out.append(f"{'FvFile' if sub == 6 else 'Fv'}({uuid.UUID(bytes_le=body)})")
        elif (typ, sub) == (2, 1):
            out.append(f"PciRoot({struct.unpack_from('<I', body, 4)[0]:#x})")
        elif (typ, sub) == (1, 1):
            out.append(f"Pci({body[1]:#x},{body[0]:#x})")
        else:
            out.append(f"Node({typ},{sub})")
        i += length
    return "/".join(out)


def load_option(entry: int) -> dict[str, Any] | None:
    """Boot#### per UEFI §3.1.3: attributes, path length, UTF-16 description, device path, data."""
    raw = var(f"Boot{entry:04X}")
    if raw is None:
        return None
    attrs, dp_len = struct.unpack_from("<IH", raw)
    end = 6
    while raw[end:end + 2] != b"\0\0":
        end += 2
    dp = raw[end + 2:end + 2 + dp_len]
    return {"active": bool(attrs & 1), "description": raw[6:end].decode("utf-16-le", errors="replace"),
            "path": device_path(dp), "optional_data": len(raw) - (end + 2 + dp_len)}


def efi_state() -> dict[str, Any]:
    """BootCurrent, BootNext, BootOrder and the entries BootOrder names (plus 0000/0001), with an
    efibootmgr-like listing for the README."""
    order_raw = var("BootOrder") or b""
    order = list(struct.unpack(f"<{len(order_raw) // 2}H", order_raw))
    cur, nxt = u16("BootCurrent"), u16("BootNext")
    entries = {f"{n:04X}": load_option(n) for n in sorted({0, 1, *order})}
    lines = [f"BootCurrent: {cur:04X}" if cur is not None else "BootCurrent: (none)"]
    if nxt is not None:
        lines.append(f"BootNext: {nxt:04X}")
    lines.append("BootOrder: " + ",".join(f"{n:04X}" for n in order))
    for n, e in entries.items():
        if e is not None:
            lines.append(f"Boot{n}{'*' if e['active'] else ' '} {e['description']}\t{e['path']}")
    return {"boot_current": cur, "boot_next": nxt, "boot_order": order, "entries": entries,
            "listing": "\n".join(lines)}


def sha256(path: Path) -> str | None:
    return hashlib.sha256(path.read_bytes()).hexdigest() if path.exists() else None


def ab_log(last_start_only: bool = False) -> list[str]:
    """cmld's A/B lines from its log files (they survive the reboots, the journal does not)."""
    lines: list[str] = []
    files = sorted(Path("/var/log/cml").glob("cml-daemon.2*"))  # one per start, by time
    for f in files[-1:] if last_start_only else files:
        lines += [line for line in f.read_text(errors="replace").splitlines() if "A/B update" in line]
    return lines


def esp_partition() -> dict[str, str]:
    out = sh("blkid", "-p", "-o", "export", expect()["esp_device"]).out
    return dict(line.split("=", 1) for line in out.splitlines() if "=" in line)


def wait_c0(data: dict[str, Any]) -> None:
    data["c0_state"], data["c0_seconds"] = ctl.wait_state("c0", "RUNNING", 600)
    if data["c0_state"] != "RUNNING":
        raise CheckFailed(f"c0 is {data['c0_state'] or 'not there'} after {data['c0_seconds']} s", data)


def wait_boot_order_first(entry: int, data: dict[str, Any], timeout: float = 120) -> None:
    """cmld confirms the slot right after c0 reached RUNNING (in a thread): wait a little."""
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        order = efi_state()["boot_order"]
        if order and order[0] == entry:
            break
        time.sleep(1)
    data["boot_order_wait_seconds"] = round(time.monotonic() - t0, 1)


def push(version: int) -> dict[str, Any]:
    """The signed `kernel` GuestOS config, pushed as an operator does (cml-control)."""
    d = common.SHARE / "extra"
    conf = d / f"kernel-{version}.conf"
    t0 = time.monotonic()
    r = sh("cml-control", "push_guestos_config", str(conf), str(conf.with_suffix(".sig")),
           str(conf.with_suffix(".cert")), timeout=600)
    return {"rc": r.rc, "out": r.text[-1500:], "seconds": round(time.monotonic() - t0, 1)}


def files() -> dict[str, Any]:
    return {"kernel_a": sha256(KERNEL_A), "kernel_b": sha256(KERNEL_B),
            "device_conf": (CML / "device.conf").exists(), "device_conf_a": (CML / "device.conf.A").exists(),
            "device_conf_b": (CML / "device.conf.B").exists(),
            "pending": (CML / ".ab-update-pending").read_text().strip()
            if (CML / ".ab-update-pending").exists() else None}


def _guarded(body: Callable[[dict[str, Any]], None]) -> dict[str, Any]:
    """Run a boot's steps; whatever happens, the facts so far and cmld's A/B log lines go back."""
    data: dict[str, Any] = {}
    try:
        body(data)
    except CheckFailed as e:
        data["ab_log"] = ab_log()[-40:]
        e.data.update(data)
        raise
    except Exception as e:
        data["ab_log"] = ab_log()[-40:]
        raise CheckFailed(f"{type(e).__name__}: {e}\n{traceback.format_exc()}", data) from e
    data["ab_log"] = ab_log()[-40:]
    return data


def slot_a() -> dict[str, Any]:
    def body(data: dict[str, Any]) -> None:
        data["efi"] = efi_state()
        data["esp"] = esp_partition()
        data["cmdline"] = Path("/proc/cmdline").read_text().strip()
        wait_c0(data)
        data["files_before"] = files()
        wait_boot_order_first(0, data, timeout=30)
        data["push"] = push(1)
        data["files_after"] = files()
        data["efi_after"] = efi_state()
    return _guarded(body)


def slot_b() -> dict[str, Any]:
    def body(data: dict[str, Any]) -> None:
        data["efi"] = efi_state()
        data["cmdline"] = Path("/proc/cmdline").read_text().strip()
        wait_c0(data)
        wait_boot_order_first(1, data)
        data["efi_confirmed"] = efi_state()
        data["files_before"] = files()
        data["push"] = push(2)
        data["files_after"] = files()
        data["efi_after"] = efi_state()
    return _guarded(body)


def fallback() -> dict[str, Any]:
    def body(data: dict[str, Any]) -> None:
        data["efi"] = efi_state()
        data["cmdline"] = Path("/proc/cmdline").read_text().strip()
        wait_c0(data)
        time.sleep(5)  # room for a (wrong) confirmation of the other slot to show
        data["efi_after_c0"] = efi_state()
        data["files"] = files()
        data["kernel_update_log"] = [line for line in ab_log() if re.search(r"did not boot|kernel update", line)]
        data["push_panic"] = push(3)
        data["files_after"] = files()
        data["efi_after"] = efi_state()
    return _guarded(body)


def fallback_panic() -> dict[str, Any]:
    def body(data: dict[str, Any]) -> None:
        data["efi"] = efi_state()
        data["cmdline"] = Path("/proc/cmdline").read_text().strip()
        wait_c0(data)
        time.sleep(5)  # room for a (wrong) confirmation of the other slot to show
        data["efi_after_c0"] = efi_state()
        data["files"] = files()
        data["last_start_log"] = ab_log(last_start_only=True)
    return _guarded(body)
