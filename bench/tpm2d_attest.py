#!/usr/bin/env python3
"""tpm2d and the verifier, each figure beside a reference measured in the same run, on one swtpm:

1. a quote through tpm2d (TCP 9505 request: PCR read + TPM2_Quote + reply) against a whole
   `tpm2_quote` run (tpm2-tools) with a key of the same kind on the same swtpm;
2. one attestation round trip with full verification on loopback (request, quote, every
   cml-rattestation check) — the target is at most 50 ms;
3. the verifier's throughput on one core (verifications of a recorded response per second)
   against the bare RSA signature verification it contains.

    .venv/bin/python bench/tpm2d_attest.py [--quick] [--json OUT]

Everything started (swtpm, tpm2d) is stopped by PID, and the temp dir removed, on every path.
"""

from __future__ import annotations

import argparse
import json
import secrets
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from bench.benchlib import wait_for_socket
from cml_common import framing
from cml_common.messages.attestation_pb2 import RemoteToTpm2d, Tpm2dToRemote
from cml_common.tpm2d_client import Tpm2dClient
from cml_rattestation import attest, checks
from cml_rattestation import main as verifier
from tests.host import tpm2dlib
from tests.host.swtpmlib import running_swtpm

BIN = Path(sys.executable).parent


def median_ms(samples: list[float]) -> float:
    return statistics.median(samples) * 1000


def fetch(port: int, nonce: bytes) -> Tpm2dToRemote:
    with socket.create_connection(("127.0.0.1", port), timeout=30) as s:
        framing.send_frame(s, framing.serialize(RemoteToTpm2d(code=RemoteToTpm2d.ATTESTATION_REQ,
                                                              qualifyingData=nonce, attest_ima=False)))
        body = framing.recv_frame(s)
    assert body is not None
    return framing.parse(Tpm2dToRemote, body)


def run(n: int, n_verify: int) -> dict[str, float]:
    res: dict[str, float] = {}
    work = Path(tempfile.mkdtemp(prefix="cml-bench-tpm2d-"))
    proc: subprocess.Popen[bytes] | None = None
    try:
        with running_swtpm() as tpm:
            log = tpm2dlib.measure_boot(tpm)
            # tpm2_quote's key (RSA-2048, restricted, RSASSA/SHA-256 as tpm2d's), made and persisted
            # before tpm2d starts: a swtpm without resource manager has only three object slots.
            tpm.tool("tpm2_createprimary", "-C", "o", "-g", "sha256", "-G", "rsa2048:aes128cfb", "-c",
                     str(work / "p.ctx"))
            tpm.tool("tpm2_flushcontext", "-t")
            tpm.tool("tpm2_create", "-C", str(work / "p.ctx"), "-G", "rsa2048:rsassa-sha256:null", "-a",
                     "fixedtpm|fixedparent|sensitivedataorigin|userwithauth|restricted|sign",
                     "-u", str(work / "ak.pub"), "-r", str(work / "ak.priv"))
            tpm.tool("tpm2_flushcontext", "-t")
            tpm.tool("tpm2_load", "-C", str(work / "p.ctx"), "-u", str(work / "ak.pub"), "-r", str(work / "ak.priv"),
                     "-c", str(work / "ak.ctx"))
            tpm.tool("tpm2_evictcontrol", "-C", "o", "-c", str(work / "ak.ctx"), "0x81010042")
            tpm.tool("tpm2_flushcontext", "-t")
            (work / "eventlog.bin").write_bytes(log)
            port = tpm2dlib.free_port()
            sock = work / "tpm2d.sock"
            proc = subprocess.Popen([str(BIN / "tpm2d"), "--foreground", "--tcti", tpm.tcti, "--base-dir",
                                     str(work / "base"), "--socket", str(sock), "--log-dir", str(work / "logs"),
                                     "--attest-listen", f"127.0.0.1:{port}", "--ml-state", str(work / "ml.json"),
                                     "--event-log", str(work / "eventlog.bin")],
                                    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            wait_for_socket(sock, proc, "tpm2d", timeout=60)
            ca = tpm2dlib.make_ca("bench CA")
            with Tpm2dClient(sock) as c:
                pub = c.device_key_public()
            (work / "base" / "tokens").mkdir(parents=True, exist_ok=True)
            (work / "base" / "tokens" / "device.cert").write_bytes(tpm2dlib.issue(ca, pub, "bench", device_uuid="b"))
            (work / "ca.pem").write_bytes(ca.pem())
            cfg_path = tpm2dlib.verifier_config(work / "r.conf", ca_cert="ca.pem", verify_ima=False)

            # 1. tpm2d quote vs tpm2_quote (an RSA-2048 restricted RSASSA key, persisted for the tool).
            t = []
            for _ in range(n):
                t0 = time.perf_counter()
                fetch(port, secrets.token_bytes(32))
                t.append(time.perf_counter() - t0)
            res["tpm2d_quote_ms"] = median_ms(t)
            t = []
            for _ in range(n):
                t0 = time.perf_counter()
                tpm.tool("tpm2_quote", "-c", "0x81010042", "-l", "sha256:0,1,2,3,4,5,6,7,8,9,10,11", "-q",
                         secrets.token_hex(32), "-m", str(work / "q.msg"), "-s", str(work / "q.sig"))
                t.append(time.perf_counter() - t0)
            res["tpm2_quote_ms"] = median_ms(t)
            tpm.tool("tpm2_evictcontrol", "-C", "o", "-c", "0x81010042")

            # 2. a whole attestation with every check, in-process as cml-rattestation does it.
            args = verifier.parser().parse_args([f"127.0.0.1:{port}", str(cfg_path)])
            cfg = attest.load_config(cfg_path)
            t = []
            for _ in range(n):
                t0 = time.perf_counter()
                code, result = attest.attest_one(f"127.0.0.1:{port}", cfg, cfg_path, args, None)
                t.append(time.perf_counter() - t0)
                assert code == 0, result
            res["attest_roundtrip_ms"] = median_ms(t)

            # 3. verifier throughput on one core, against the RSA verification inside it.
            nonce = secrets.token_bytes(32)
            resp = fetch(port, nonce)
            ctx = checks.Context(cfg, cfg_path.parent, nonce)
            assert checks.verify(ctx, resp).ok()
            t0 = time.perf_counter()
            for _ in range(n_verify):
                checks.verify(checks.Context(cfg, cfg_path.parent, nonce), resp)
            res["verifications_per_s"] = n_verify / (time.perf_counter() - t0)
            key = serialization.load_pem_public_key(pub)
            assert isinstance(key, rsa.RSAPublicKey)
            from cml_rattestation import tpmstructs

            sig = tpmstructs.parse_signature(bytes(resp.signature)).sig
            t0 = time.perf_counter()
            for _ in range(n_verify):
                key.verify(sig, bytes(resp.quoted), padding.PKCS1v15(), hashes.SHA256())
            res["rsa_verify_per_s"] = n_verify / (time.perf_counter() - t0)
    finally:
        if proc is not None and proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        shutil.rmtree(work, ignore_errors=True)
    return res


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="few iterations (the test suite's smoke run)")
    ap.add_argument("--json", type=Path, help="also write the figures as JSON")
    a = ap.parse_args()
    n, n_verify = (3, 20) if a.quick else (30, 500)
    res = run(n, n_verify)
    print(f"quote through tpm2d (9505 round trip)   {res['tpm2d_quote_ms']:8.2f} ms median")
    print(f"tpm2_quote (tpm2-tools, whole process)  {res['tpm2_quote_ms']:8.2f} ms median"
          f"   ratio tpm2d/tpm2_quote {res['tpm2d_quote_ms'] / res['tpm2_quote_ms']:.2f}")
    print(f"attestation + full verification         {res['attest_roundtrip_ms']:8.2f} ms median"
          f"   (target <= 50 ms: {'met' if res['attest_roundtrip_ms'] <= 50 else 'NOT met'})")
    print(f"verifier, one core                      {res['verifications_per_s']:8.1f} verifications/s")
    print(f"RSA-2048 verify alone                   {res['rsa_verify_per_s']:8.1f} /s"
          f"   ratio verifier/RSA {res['verifications_per_s'] / res['rsa_verify_per_s']:.3f}")
    if a.json:
        a.json.write_text(json.dumps(res, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
