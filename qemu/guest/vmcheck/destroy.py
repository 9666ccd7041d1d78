"""DESTROY_SYSTEM on a device (not hosted, set by sysdata_boot): cmld answers CMD_OK, has tpm2d
clear the TPM, erases the system data volume's keyslots and reboots the device by force. The
facts before the command are left in `<share>/destroy.json`, since the reboot ends this check;
the next boot (sysdata_destroyed) sees what is left."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from . import common
from .common import CheckFailed, sh

REBOOTS = True
DEVICE = "/dev/vdb"


def keyslots(dump: str) -> list[str]:
    """The keyslot numbers of `cryptsetup luksDump` output."""
    section = dump.split("Keyslots:", 1)[1].split("Tokens:", 1)[0] if "Keyslots:" in dump else ""
    return [ln.split(":")[0].strip() for ln in section.splitlines() if ln.strip().endswith(": luks2")]


def check() -> dict[str, Any]:
    data: dict[str, Any] = {"keyslots_before": keyslots(sh("cryptsetup", "luksDump", DEVICE).out),
                            "hosted": "hostedmode: false" not in Path("/var/lib/cml/device.conf").read_text()}
    side = common.SHARE / "destroy.json"
    side.write_text(json.dumps(data))
    r = sh("cml-control", "destroy_system", timeout=120)
    data["reply"] = {"rc": r.rc, "out": r.text[-300:]}
    data["sent_at_uptime"] = float(Path("/proc/uptime").read_text().split()[0])
    side.write_text(json.dumps(data))
    time.sleep(300)
    data["log"] = sh("journalctl", "-u", "cmld", "-o", "cat", "-n", "20", "--no-pager").text[-3000:]
    raise CheckFailed("the device did not reboot within 300 s of DESTROY_SYSTEM", data)
