"""The host's side of the guest's `attest` check (qemu/guest/vmcheck/attest.py): the backend that
provisions the device (signs its CSR with a device CA), the vendor that signs the GuestOS config,
and the verifier that attests the guest over the forwarded port with `cml-rattestation`."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

BIN = Path(sys.executable).parent
GUEST_PORT = 9505
WAIT = 600.0


class AgentError(Exception):
    pass


def _wait(d: Path, name: str, stop: threading.Event) -> None:
    deadline = time.monotonic() + WAIT
    while not (d / name).exists():
        if stop.is_set():
            raise AgentError(f"the guest stopped before writing {name}")
        if time.monotonic() > deadline:
            raise AgentError(f"the guest did not write {name} within {WAIT:g} s")
        time.sleep(0.5)


def _run(*argv: str | Path, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(a) for a in argv], capture_output=True, text=True, timeout=timeout, check=False)


def _must(*argv: str | Path) -> str:
    r = _run(*argv)
    if r.returncode != 0:
        raise AgentError(f"{' '.join(map(str, argv))}: {r.stderr.strip() or r.stdout.strip()}")
    return r.stdout


def _publish(path: Path, data: bytes) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def _attest(port: int, cfg: Path, *extra: str) -> dict[str, Any]:
    r = _run(BIN / "cml-rattestation", f"127.0.0.1:{port}", cfg, "--json", *extra, timeout=180)
    try:
        result = json.loads(r.stdout.strip().splitlines()[-1])
    except (ValueError, IndexError):
        result = {"raw": r.stdout, "stderr": r.stderr}
    return {"rc": r.returncode, "result": result}


def agent(share: Path, forwards: dict[int, int], stop: threading.Event) -> dict[str, Any]:
    d = share / "attest"
    d.mkdir(exist_ok=True)
    port = forwards[GUEST_PORT]
    out: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="cml-vm-agent-") as tmp:
        w = Path(tmp)
        _wait(d, "csr-ready", stop)
        _must(BIN / "cml-sign", "pki", w / "pki", "--key-type", "ec256")
        pki = w / "pki"
        _must(BIN / "cml-sign", "csr", d / "device.csr", "--ca-key", pki / "device_subca.key", "--ca-cert",
              pki / "device_subca.cert", "-o", w / "device.cert")
        _publish(d / "device.cert", (w / "device.cert").read_bytes())
        refs = w / "guestos"
        refs.mkdir()
        (refs / "busybox-1.conf").write_bytes((d / "busybox-1.conf").read_bytes())
        _must(BIN / "cml-sign", "sign", refs / "busybox-1.conf", "-k", pki / "ssig_cml.key", "--cert",
              pki / "ssig_cml.chain")
        (w / "device-ca.pem").write_bytes((pki / "device_subca.cert").read_bytes())
        (w / "guestos-ca.pem").write_bytes((pki / "ssig_rootca.cert").read_bytes())
        base = ('name: "vm"\nkmod_sign_cert: "yocto.pem"\natype: BASIC\nca_cert: "device-ca.pem"\n'
                'guestos_dir: "guestos"\nguestos_ca: "guestos-ca.pem"\n')
        (w / "r.conf").write_text(base)
        _wait(d, "ready-1", stop)
        state = ["--state-dir", str(w / "state")]
        out["good"] = _attest(port, w / "r.conf", "--make-policy", str(w / "boot.policy"), *state)
        if (w / "boot.policy").exists():
            out["policy"] = json.loads((w / "boot.policy").read_text())
            (w / "p.conf").write_text(base + 'event_log_policy: "boot.policy"\n')
            out["with_policy"] = _attest(port, w / "p.conf", *state)
        other = w / "other"
        _must(BIN / "cml-sign", "pki", other, "--key-type", "ec256")
        (w / "other-ca.pem").write_bytes((other / "device_subca.cert").read_bytes())
        (w / "o.conf").write_text(base.replace("device-ca.pem", "other-ca.pem"))
        out["other_ca"] = _attest(port, w / "o.conf")
        _publish(d / "done-1", b"1")
        _wait(d, "ready-2", stop)
        out["tampered"] = _attest(port, w / ("p.conf" if (w / "p.conf").exists() else "r.conf"), *state)
        _publish(d / "done-2", b"1")
    return out
