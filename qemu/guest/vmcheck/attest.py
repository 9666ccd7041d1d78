"""Remote attestation of this guest from the host (J8, J11, J12, J13), in one boot.

The guest side of a dialogue with the host's agent (tests/vm/attest_agent.py) through files in
`<share>/attest/`:
1. the guest measures the busybox GuestOS images into PCR 11 through tpm2d, as cmld will;
   pulls scd's CSR (its key is tpm2d's attestation key, `tpm_enabled: true`) and hands it and the
   GuestOS config over (`csr-ready`);
2. the host signs the CSR with its device CA; the guest installs the certificate with
   `cml-control push_cert`;
3. the FDE key (J13): a second tpm2d without keys, as GyroidOS's initramfs runs it, maps a loop
   device with the key from TPM NV (real device-mapper), twice: the same key both times;
4. `ready-1`: the host attests the guest over the forwarded port (real firmware PCRs and event
   log), then `done-1`;
5. the guest extends PCR 7 (a changed secure-boot state after boot): the FDE key is refused;
   `ready-2`: the host attests again and must fail, then `done-2`.
"""

from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

from .common import CheckFailed, must, sh

SHARE = Path("/mnt/host")
GUESTOS = Path("/var/lib/cml/operatingsystems")
FDE_SOCK = Path("/run/cml-fde.sock")
WAIT = 400.0


def wait_for(d: Path, name: str, data: dict[str, Any]) -> None:
    deadline = time.monotonic() + WAIT
    while not (d / name).exists():
        if time.monotonic() > deadline:
            raise CheckFailed(f"the host agent did not write {name} within {WAIT:g} s", data)
        time.sleep(0.5)


def network() -> str:
    ifaces = sorted(p.name for p in Path("/sys/class/net").iterdir() if p.name != "lo")
    if not ifaces:
        raise CheckFailed("no network interface (virtio-net) in the guest")
    must("ip", "link", "set", ifaces[0], "up")
    must("ip", "addr", "add", "10.0.2.15/24", "dev", ifaces[0])
    return ifaces[0]


def measure() -> list[dict[str, str]]:
    from cml_common.tpm2d_client import Tpm2dClient

    out = []
    with Tpm2dClient() as c:
        for img in sorted((GUESTOS / "busybox-1").glob("*.img")):
            digest = hashlib.sha256(img.read_bytes()).digest()
            c.ml_append(str(img), digest)
            out.append({"file": str(img), "sha256": digest.hex()})
    return out


def fde_tpm2d() -> subprocess.Popen[bytes]:
    base = Path("/run/cml-fde-base")
    proc = subprocess.Popen(["tpm2d", "--foreground", "--nokeys", "--tcti", "device:/dev/tpmrm0", "--socket",
                             str(FDE_SOCK), "--base-dir", str(base), "--log-dir", str(base / "log"),
                             "--ml-state", str(base / "ml.json")],
                            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 120
    while not FDE_SOCK.exists():
        if proc.poll() is not None or time.monotonic() > deadline:
            err = proc.stderr.read().decode(errors="replace") if proc.stderr and proc.poll() is not None else ""
            raise CheckFailed(f"the initramfs-style tpm2d did not start: {err[-2000:]}")
        time.sleep(0.2)
    return proc


def tpm2_control(*args: str) -> dict[str, Any]:
    r = sh("tpm2_control", "-s", str(FDE_SOCK), *args, timeout=120)
    return {"rc": r.rc, "out": r.out, "err": r.err}


def fde_roundtrip(dev: str, marker: bytes) -> dict[str, Any]:
    """Map, write the marker (first time) or read it back, unmap."""
    name = Path(dev).name
    res = tpm2_control("dmcrypt_setup", dev, "fde-pw")
    mapped = Path("/dev/mapper") / name
    res["mapped"] = mapped.exists()
    if mapped.exists():
        with mapped.open("r+b") as f:
            first = f.read(len(marker))
            if first != marker:
                f.seek(0)
                f.write(marker)
                f.flush()
                os.fsync(f.fileno())
            res["read_marker"] = first == marker
        # udev may still hold the new device open for its probe: --retry waits that out, and a
        # mapping left behind is reported here rather than as a confusing failure of the next map.
        r = sh("dmsetup", "remove", "--retry", name, timeout=60)
        res["unmapped"] = {"rc": r.rc, "err": r.err[-500:]}
    return res


def check() -> dict[str, Any]:
    d = SHARE / "attest"
    d.mkdir(exist_ok=True)
    data: dict[str, Any] = {"iface": network(), "measured": measure()}
    r = sh("cml-control", "pull_csr", str(d / "device.csr"), timeout=120)
    data["pull_csr"] = {"rc": r.rc, "out": r.text[-2000:]}
    if r.rc != 0:
        raise CheckFailed("cml-control pull_csr failed", data)
    (d / "busybox-1.conf").write_bytes((GUESTOS / "busybox-1.conf").read_bytes())
    (d / "csr-ready").write_text("1")
    wait_for(d, "device.cert", data)
    r = sh("cml-control", "push_cert", str(d / "device.cert"), timeout=120)
    data["push_cert"] = {"rc": r.rc, "out": r.text[-2000:]}

    backing = Path("/var/lib/cml/containers/fde-test.img")
    backing.write_bytes(bytes(16 << 20))
    loop = must("losetup", "-f", "--show", str(backing)).strip()
    fde = fde_tpm2d()
    marker = b"CML FDE marker " + os.urandom(8).hex().encode()
    try:
        data["fde_first"] = fde_roundtrip(loop, marker)
        data["fde_second"] = fde_roundtrip(loop, marker)
        (d / "ready-1").write_text("1")
        wait_for(d, "done-1", data)
        # A changed secure-boot state after boot: PCR 7 extended.
        must("env", "TPM2TOOLS_TCTI=device:/dev/tpmrm0", "tpm2_pcrextend",
             "7:sha256=" + hashlib.sha256(b"secure boot tampered").hexdigest())
        data["fde_after_tamper"] = tpm2_control("dmcrypt_setup", loop, "fde-pw")
        (d / "ready-2").write_text("1")
        wait_for(d, "done-2", data)
    finally:
        tpm2_control("exit")
        try:
            fde.wait(20)
        except subprocess.TimeoutExpired:
            fde.send_signal(signal.SIGKILL)
            fde.wait(10)
        sh("dmsetup", "remove", Path(loop).name)
        sh("losetup", "-d", loop)
        backing.unlink(missing_ok=True)
    return data
