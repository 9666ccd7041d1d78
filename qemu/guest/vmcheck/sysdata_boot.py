"""After a real reboot: the system data volume was opened at boot by cml-sysdata.service with no
PIN (tpm2d unsealed its key under the signed PCR-7 policy), cmld runs on it, and the encrypted
container of the first boot starts with its PIN and reads back what it wrote then. The device
becomes a device (not hosted) with c0, whose volume is INTEGRITY_ONLY with its raw 32-byte key.
Then PCR 7 changes (another secure-boot state): the volume no longer opens without a PIN, the
recovery key opens it, and a policy the vendor signs for the new value makes it open unattended
again."""

from __future__ import annotations

import hashlib
import traceback
from pathlib import Path
from typing import Any

from . import ctl
from .common import CheckFailed, must, sh, state_get
from .sysdata_setup import VENDOR, mounts, pcr7, sign_policy

C0 = "00000000-0000-0000-0000-000000000000"
DEVICE_CONF = 'hostedmode: false\nsigned_configs: false\ntpm_enabled: true\nc0os: "busybox"\n'


def unit(name: str) -> dict[str, str]:
    out = sh("systemctl", "show", name, "--property=ActiveState,Result,ExecMainStatus").out
    props = dict(line.split("=", 1) for line in out.splitlines() if "=" in line)
    props["journal"] = sh("journalctl", "-b", "-u", name, "--no-pager", "-o", "cat", "-n", "8").text
    return props


def c0_facts(data: dict[str, Any], key: str) -> None:
    data[f"{key}_state"], data[f"{key}_seconds"] = ctl.wait_state("c0", "RUNNING", 400)
    data[f"{key}_mode"] = ctl.field(ctl.status("c0"), "cryptfs_mode")
    data[f"{key}_tables"] = ctl.dm_tables(C0)


def check() -> dict[str, Any]:
    data: dict[str, Any] = {}
    sd, vc = state_get("sysdata"), state_get("vcrypt")
    if not sd or not vc:
        raise CheckFailed("the first boot set up no system data volume or no encrypted container")
    try:
        data["boot_unit"] = unit("cml-sysdata.service")
        data["mounts"] = mounts()
        data["cmld_active"] = sh("systemctl", "is-active", "cmld").out.strip()
        data["pcr7_matches_setup"] = pcr7() == sd["pcr7"]
        # the encrypted container of the first boot, after a real reboot
        data["vcrypt_start"] = ctl.start("vcrypt").text[-300:]
        data["vcrypt_state"], _ = ctl.wait_state("vcrypt", "RUNNING", 400)
        r = ctl.run_in("vcrypt", "cat /data/secret.txt")
        data["vcrypt_read"] = {"rc": r.rc, "out": r.text[-200:], "mark": vc["mark"]}
        ctl.stop("vcrypt")
        ctl.wait_state("vcrypt", "STOPPED", 120)
        # a device with c0 (INTEGRITY_ONLY)
        Path("/var/lib/cml/device.conf").write_text(DEVICE_CONF)
        must("systemctl", "restart", "cmld", timeout=300)
        c0_facts(data, "c0")
        key = ctl.BASE / "keys" / f"{C0}.key"
        data["c0_key_bytes"] = key.stat().st_size
        data["c0_key_mode"] = oct(key.stat().st_mode & 0o777)
        # another secure-boot state: PCR 7 extended
        must("env", "TPM2TOOLS_TCTI=device:/dev/tpmrm0", "tpm2_pcrextend",
             "7:sha256=" + hashlib.sha256(b"another secure boot state").hexdigest())
        must("systemctl", "stop", "cmld", timeout=300)
        data["close"] = sh("cml-sysdata", "close").text
        data["mounts_closed"] = mounts()
        r = sh("cml-sysdata", "open", timeout=300)
        data["open_pcr7_changed"] = {"rc": r.rc, "out": r.text[-600:]}
        data["open_is_open"] = sh("cml-sysdata", "status").text
        r = sh("cml-sysdata", "open", "--recovery-key-file", "-", stdin=sd["recovery"] + "\n", timeout=300)
        data["open_recovery"] = {"rc": r.rc, "out": r.text[-400:]}
        r = sh("cml-sysdata", "open", "--recovery-key-file", "-", stdin="0000-0000-0000-0000-0000-0000-0000-0000\n")
        data["open_wrong_recovery_while_open"] = {"rc": r.rc, "out": r.text[-300:]}
        must("systemctl", "start", "cmld", timeout=300)
        c0_facts(data, "c0_again")
        # the vendor signs the new PCR 7 value: unattended again
        VENDOR.mkdir(mode=0o700, exist_ok=True)
        (VENDOR / "authority.key").write_text(sd["authority_key"])
        new = sign_policy(pcr7(), "release-2")
        seal = sh("cml-sysdata", "status").out
        seal_name = ctl.field(seal, "sealed_object")
        data["policy_update"] = sh("cml-tpm2-control", "seal_policy_update", seal_name, str(new)).text[-300:]
        must("systemctl", "stop", "cmld", timeout=300)
        sh("cml-sysdata", "close")
        r = sh("cml-sysdata", "open", timeout=300)
        data["open_new_policy"] = {"rc": r.rc, "out": r.text[-300:]}
        must("systemctl", "start", "cmld", timeout=300)
        c0_facts(data, "c0_third")
        return data
    except CheckFailed as e:
        e.data.update(data)
        raise
    except Exception as e:
        raise CheckFailed(f"{type(e).__name__}: {e}\n{traceback.format_exc()}", data) from e
    finally:
        data["cmld_log_tail"] = sh("journalctl", "-u", "cmld", "-o", "cat", "-n", "40", "--no-pager").text[-4000:]
