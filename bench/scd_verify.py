#!/usr/bin/env python3
"""scd benchmark: signature verification throughput and soft-token creation latency.

    bench/scd_verify.py [--quick] [--json OUT] [--key-type rsa3072]

1. Verify: the same signed config (cml-sign, RSA-PSS SHA-512, chain of two to the ssig root)
   checked N times by
     - scd over its socket (CRYPTO_VERIFY_FILE, one connection per request, as cmld does),
     - scd's verifier in-process (no socket),
     - the reference `openssl dgst -sha512 -sigopt rsa_padding_mode:pss -verify` (one process per
       check, like a shell script would), plus `openssl verify` of the chain for a fair total.
2. Token creation: TOKEN_ADD of fresh soft tokens (EC P-256 PKCS#12 under `trustme`) against the
   cost of the original's RSA-4096 key generation (`openssl genpkey`, measured in the same run).

Prints medians and ratios; no thresholds (timings are not asserted anywhere).
"""

from __future__ import annotations

import argparse
import json
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

from benchlib import git, wait_for_socket

from cml_common import framing
from cml_common.messages.scd_pb2 import DaemonToToken, HashAlgo, TokenToDaemon
from cml_common.paths import Layout
from cml_sign.pki import create_pki
from cml_sign.sign import sign_config
from cml_sign.signer import PemSigner
from scd.trust import load_anchors
from scd.verify import verify

Q, T = DaemonToToken, TokenToDaemon
BIN = Path(sys.executable).parent


def request(sock_path: Path, req: DaemonToToken) -> TokenToDaemon:
    with socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET) as s:
        s.connect(str(sock_path))
        framing.send_seqpacket(s, framing.serialize(req))
        body = framing.recv_seqpacket(s)
    assert body is not None
    return framing.parse(TokenToDaemon, body)


def timed(n: int, fn: object) -> list[float]:
    out = []
    for _ in range(n):
        t = time.perf_counter()
        fn()  # type: ignore[operator]
        out.append(time.perf_counter() - t)
    return out


def ms(xs: list[float]) -> float:
    return statistics.median(xs) * 1000


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="few iterations (smoke test)")
    ap.add_argument("--json", type=Path)
    ap.add_argument("--key-type", default="rsa3072")
    args = ap.parse_args()
    n_verify, n_tokens, n_rsa = (5, 3, 1) if args.quick else (200, 20, 3)
    work = Path(tempfile.mkdtemp(prefix="scd-bench-"))
    proc: subprocess.Popen[bytes] | None = None
    try:
        pki = work / "pki"
        create_pki(pki, args.key_type)
        conf = work / "app.conf"
        conf.write_text('name: "bench"\nguest_os: "busybox"\n' * 20)
        sig, cert = sign_config(conf, PemSigner(pki / "ssig_cml.key"), [pki / "ssig_cml.chain"])
        base = work / "base"
        (base / "tokens").mkdir(parents=True)
        shutil.copy(pki / "ssig_rootca.cert", base / "tokens" / "ssig_rootca.cert")
        sock = work / "scd.sock"
        proc = subprocess.Popen([str(BIN / "scd"), "-F", "--base-dir", str(base), "--socket", str(sock),
                                 "--log-dir", str(work / "logs")], stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL)
        wait_for_socket(sock, proc, "scd", kind=socket.SOCK_SEQPACKET)

        vreq = Q(code=Q.CRYPTO_VERIFY_FILE, hash_algo=HashAlgo.SHA512, verify_data_file=str(conf),
                 verify_sig_file=str(sig), verify_cert_file=str(cert))
        assert request(sock, vreq).code == T.CRYPTO_VERIFY_GOOD
        scd_sock = timed(n_verify, lambda: request(sock, vreq))
        anchors = load_anchors(Layout(base))
        data, sigb, certb = conf.read_bytes(), sig.read_bytes(), cert.read_bytes()
        in_proc = timed(n_verify, lambda: verify(data, sigb, certb, HashAlgo.SHA512, anchors, True))
        pub = work / "pub.pem"
        pub.write_bytes(subprocess.run(["openssl", "x509", "-in", str(pki / "ssig_cml.cert"), "-pubkey", "-noout"],
                                       capture_output=True, check=True).stdout)
        pss = ["-sigopt", "rsa_padding_mode:pss"] if args.key_type.startswith("rsa") else []
        dgst = ["openssl", "dgst", "-sha512", *pss, "-verify", str(pub), "-signature", str(sig), str(conf)]
        chain = ["openssl", "verify", "-CAfile", str(pki / "ssig_rootca.cert"), "-untrusted", str(cert), str(cert)]
        ossl_dgst = timed(n_verify, lambda: subprocess.run(dgst, capture_output=True, check=True))
        ossl_both = timed(n_verify, lambda: (subprocess.run(chain, capture_output=True, check=True),
                                             subprocess.run(dgst, capture_output=True, check=True)))

        def add() -> None:
            r = request(sock, Q(code=Q.TOKEN_ADD, token_uuid=str(uuid.uuid4())))
            assert r.code == T.TOKEN_ADD_SUCCESSFUL

        token_add = timed(n_tokens, add)
        rsa4096 = timed(n_rsa, lambda: subprocess.run(
            ["openssl", "genpkey", "-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:4096", "-out",
             str(work / "k.pem")], capture_output=True, check=True))
    finally:
        if proc is not None:
            proc.terminate()
            proc.wait(10)
        shutil.rmtree(work, ignore_errors=True)

    res = {
        "commit": git("rev-parse", "--short", "HEAD"), "key_type": args.key_type, "n_verify": n_verify,
        "verify_scd_socket_ms": ms(scd_sock), "verify_in_process_ms": ms(in_proc),
        "openssl_dgst_ms": ms(ossl_dgst), "openssl_verify_plus_dgst_ms": ms(ossl_both),
        "token_add_ms": ms(token_add), "openssl_rsa4096_keygen_ms": ms(rsa4096),
    }
    print(f"signature verification ({args.key_type}, median of {n_verify}):")
    print(f"  scd over its socket        {res['verify_scd_socket_ms']:8.2f} ms  "
          f"({1000 / res['verify_scd_socket_ms']:.0f}/s)")
    print(f"  scd verifier in-process    {res['verify_in_process_ms']:8.2f} ms")
    print(f"  openssl dgst -verify       {res['openssl_dgst_ms']:8.2f} ms  "
          f"ratio scd/openssl = {res['verify_scd_socket_ms'] / res['openssl_dgst_ms']:.2f}")
    print(f"  openssl verify + dgst      {res['openssl_verify_plus_dgst_ms']:8.2f} ms  "
          f"ratio scd/openssl = {res['verify_scd_socket_ms'] / res['openssl_verify_plus_dgst_ms']:.2f}")
    print(f"soft token creation (median of {n_tokens}):")
    print(f"  scd TOKEN_ADD (EC P-256)   {res['token_add_ms']:8.2f} ms")
    print(f"  RSA-4096 keygen (original) {res['openssl_rsa4096_keygen_ms']:8.2f} ms  "
          f"ratio = {res['openssl_rsa4096_keygen_ms'] / res['token_add_ms']:.1f}x faster")
    if args.json:
        args.json.write_text(json.dumps(res, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
