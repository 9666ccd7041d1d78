"""The boot after DESTROY_SYSTEM: the system data volume's key is gone from the TPM (tpm2d cleared
it) and from the volume (no keyslot left), so cml-sysdata.service fails at boot, cmld does not
start on the empty directories underneath, and the recovery key opens nothing either."""

from __future__ import annotations

from typing import Any

from .common import sh, state_get
from .destroy import DEVICE, keyslots
from .sysdata_boot import unit
from .sysdata_setup import mounts


def check() -> dict[str, Any]:
    sd = state_get("sysdata") or {}
    data: dict[str, Any] = {"boot_unit": unit("cml-sysdata.service"), "cmld": unit("cmld.service"),
                            "tpm2d": unit("cml-tpm2d.service"), "mounts": mounts()}
    dump = sh("cryptsetup", "luksDump", DEVICE).out
    data["keyslots"] = keyslots(dump)
    data["luks_header_left"] = "LUKS header information" in dump
    r = sh("cml-sysdata", "open", timeout=300)
    data["open"] = {"rc": r.rc, "out": r.text[-600:]}
    r = sh("cml-sysdata", "open", "--recovery-key-file", "-", stdin=str(sd.get("recovery", "")) + "\n", timeout=300)
    data["open_recovery"] = {"rc": r.rc, "out": r.text[-600:]}
    data["dm"] = sh("dmsetup", "ls").text
    return data
