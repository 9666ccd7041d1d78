"""A GuestOS opened with dm-verity (the busyverity GuestOS: busybox with a hash tree and the root
hash in its config): the container runs on the verified device, the full image check passes in
the background; a byte flipped in the image while the container runs gives EIO inside, the
kernel's verity error, cmld's log line naming container, device and block, and ZOMBIE; flipped
while stopped, the background check ends the next start the same way. The image repaired, a wipe
brings the container back."""

from __future__ import annotations

import time
import traceback
from typing import Any

from . import ctl
from .common import CheckFailed, sh

NAME = "vver"
IMG = ctl.BASE / "operatingsystems" / "busyverity-1" / "root.img"
VICTIM = "/etc/init.d/rcK"  # read only at shutdown: not in the page cache when it is tampered with


def victim_offset() -> int:
    return ctl.file_offset(str(IMG), VICTIM) + 5


def wait_log(cur: str, needle: str, timeout: float) -> list[str]:
    deadline = time.monotonic() + timeout
    lines: list[str] = []
    while time.monotonic() < deadline:
        lines = ctl.log_since(cur)
        if any(needle in ln for ln in lines):
            break
        time.sleep(1)
    return lines


def check() -> dict[str, Any]:
    data: dict[str, Any] = {}
    off = -1
    try:
        uuid = ctl.create(NAME, ctl.container_conf(NAME, guestos="busyverity", kind="NONE"))
        data["uuid"] = uuid
        cur = ctl.cursor()
        t0 = time.monotonic()
        data["start"] = ctl.start(NAME, pin=None).text[-300:]
        data["state"], _ = ctl.wait_state(NAME, "RUNNING", 300)
        data["start_seconds"] = round(time.monotonic() - t0, 1)
        log = wait_log(cur, "background check of root.img passed", 120)
        data["log"] = [ln for ln in log if "verity" in ln or "background" in ln or "measured" in ln]
        data["tables"] = ctl.dm_tables(uuid)
        data["status"] = sh("dmsetup", "status", f"{uuid}-root").out.strip()
        data["mounts"] = [ln for ln in ctl.run_in(NAME, "cat /proc/mounts").out.splitlines() if " / " in ln]
        # tampered while running
        off = victim_offset()
        ctl.flip_byte(IMG, off)
        ctl.drop_caches()
        cur = ctl.cursor()
        r = ctl.run_in(NAME, f"cat {VICTIM}")
        data["read_tampered"] = {"rc": r.rc, "out": r.text[-300:]}
        data["state_tampered"], data["zombie_seconds"] = ctl.wait_state(NAME, "ZOMBIE", 120)
        data["tamper_log"] = [ln for ln in ctl.log_since(cur) if "corrupt" in ln or "ZOMBIE" in ln][-6:]
        data["kernel"] = [ln for ln in sh("dmesg").out.splitlines() if "verity" in ln and "corrupted" in ln][-3:]
        data["dm_left"] = ctl.dm_devices(uuid)
        # tampered while stopped: the start runs, the background check ends it
        sh("cml-control", "wipe", NAME, timeout=120)
        cur = ctl.cursor()
        data["start_tampered"] = ctl.start(NAME, pin=None).text[-300:]
        data["state_bg"], data["bg_zombie_seconds"] = ctl.wait_state(NAME, "ZOMBIE", 300)
        data["bg_log"] = [ln for ln in ctl.log_since(cur) if "background" in ln or "ZOMBIE" in ln][-6:]
        # repaired: back to normal after a wipe
        ctl.flip_byte(IMG, off)
        off = -1
        ctl.drop_caches()
        data["wipe"] = sh("cml-control", "wipe", NAME, timeout=120).text[-200:]
        data["start_repaired"] = ctl.start(NAME, pin=None).text[-300:]
        data["state_repaired"], _ = ctl.wait_state(NAME, "RUNNING", 300)
        r = ctl.run_in(NAME, f"cat {VICTIM} >/dev/null && echo readable")
        data["read_repaired"] = {"rc": r.rc, "out": r.text[-200:]}
        ctl.stop(NAME)
        ctl.wait_state(NAME, "STOPPED", 120)
        data["dm_after_stop"] = ctl.dm_devices(uuid)
        sh("cml-control", "remove", NAME, timeout=120)
        return data
    except CheckFailed as e:
        e.data.update(data)
        raise
    except Exception as e:
        raise CheckFailed(f"{type(e).__name__}: {e}\n{traceback.format_exc()}", data) from e
    finally:
        if off >= 0:  # failed half-way: the image is repaired for whatever runs next
            ctl.flip_byte(IMG, off)
