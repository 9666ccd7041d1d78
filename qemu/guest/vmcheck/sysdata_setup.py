"""Provisioning the system data volume on /dev/vdb, as an integrator would, before any container
exists: the vendor's seal authority (a key pair made here for the test) signs a policy for the
PCR 7 value of this platform; `cml-sysdata setup` seals a secret in tpm2d to it, formats the disk
as LUKS2 with it and puts cmld's data directories on it; cmld is restarted on top. Every later
check's containers live there. Runs before `attest`, which extends PCR 7."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from .common import CheckFailed, must, sh, state_put

DEVICE = "/dev/vdb"
VENDOR = Path("/run/vendor")


def pcr7() -> str:
    out = must("env", "TPM2TOOLS_TCTI=device:/dev/tpmrm0", "tpm2_pcrread", "sha256:7")
    m = re.search(r"^\s*7\s*:\s*0x([0-9A-Fa-f]{64})", out, re.M)
    if m is None:
        raise CheckFailed(f"tpm2_pcrread printed no PCR 7: {out}")
    return m.group(1).lower()


def sign_policy(pcr: str, name: str) -> Path:
    out = VENDOR / f"{name}.policy"
    must("cml-tpm2-control", "seal_policy_sign", "--key", str(VENDOR / "authority.key"), "--pcr", f"7={pcr}",
         "--description", name, "-o", str(out))
    return out


def vendor_key() -> None:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    VENDOR.mkdir(mode=0o700, exist_ok=True)
    key = ec.generate_private_key(ec.SECP256R1())
    (VENDOR / "authority.key").write_bytes(key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
    (VENDOR / "authority.pem").write_bytes(key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo))


def mounts() -> list[str]:
    return [ln for ln in Path("/proc/self/mountinfo").read_text().splitlines() if "/var/lib/cml/" in ln]


def check() -> dict[str, Any]:
    data: dict[str, Any] = {}
    vendor_key()
    value = pcr7()
    data["pcr7"] = value
    policy = sign_policy(value, "release-1")
    must("systemctl", "stop", "cmld")
    try:
        data["boot_unit"] = sh("systemctl", "status", "--no-pager", "-n", "3", "cml-sysdata").text[-600:]
        setup = sh("cml-sysdata", "setup", "--device", DEVICE, "--authority", str(VENDOR / "authority.pem"),
                   "--policy", str(policy), timeout=900)
        m = re.search(r"^recovery key: (\S+)$", setup.out, re.M)
        data["setup"] = {"rc": setup.rc, "out": re.sub(r"recovery key: \S+", "recovery key: <redacted>", setup.text)}
        if setup.rc != 0 or m is None:
            raise CheckFailed(f"cml-sysdata setup failed: {setup.text}", data)
        state_put("sysdata", {"recovery": m.group(1), "pcr7": value,
                              "authority_key": (VENDOR / "authority.key").read_text()})
        again = sh("cml-sysdata", "setup", "--device", DEVICE, "--authority", str(VENDOR / "authority.pem"),
                   "--policy", str(policy))
        data["setup_again"] = {"rc": again.rc, "out": again.text[-300:]}
    finally:
        must("systemctl", "start", "cmld", timeout=300)
    data["status"] = sh("cml-sysdata", "status").text
    data["mounts"] = mounts()
    data["table"] = sh("dmsetup", "table", "cml-sysdata").text
    data["luks_dump"] = sh("cryptsetup", "luksDump", DEVICE).text[-2500:]
    data["config"] = Path("/var/lib/cml/sysdata.conf").read_text()
    data["cmld_active"] = sh("systemctl", "is-active", "cmld").out.strip()
    data["list"] = sh("cml-control", "list", timeout=60).rc
    return data
