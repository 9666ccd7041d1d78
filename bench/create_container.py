#!/usr/bin/env python3
"""Create-container latency, the way a device does it: CREATE_CONTAINER of a signed config with a
software token, over cmld's control socket, with scd verifying the signature and making the token.

    bench/create_container.py [--runs N] [--ref-runs N] [--key-type rsa3072] [--json OUT]

Each run creates a new container (own name, own token) from a config signed by `cml-sign` under a
development PKI, and measures from sending the request to the CONTAINER_CONFIG reply; that covers
the signature check in scd, storing the config and TOKEN_ADD (the PKCS#12 file). The reference,
measured in the same run, is what dominates the original's create: an RSA-4096 key generation
(`openssl genpkey`). Prints medians and the ratio; nothing is asserted.
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
from pathlib import Path

from benchlib import git, wait_for_socket

from cml_common.messages.control_pb2 import ControllerToDaemon, DaemonToController
from cml_control.client import ControlClient

BIN = Path(sys.executable).parent
DEVICE_CONF = "hostedmode: true\nsigned_configs: true\ntpm_enabled: false\n"


def start(cmd: list[str], sock: Path, kind: int, log: Path) -> subprocess.Popen[bytes]:
    with log.open("wb") as err:
        proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=err)
    try:
        wait_for_socket(sock, proc, sock.stem, kind=kind)
    except BaseException:
        proc.kill()  # never leave a daemon behind when it did not come up
        proc.wait()
        raise
    return proc


def signed_config(tmp: Path, pki: Path, name: str) -> tuple[bytes, bytes, bytes]:
    conf = tmp / f"{name}.conf"
    conf.write_text(f'name: "{name}"\nguest_os: "busybox"\ncolor: 0\ntype: CONTAINER\ntoken_type: SOFT\n')
    subprocess.run([str(BIN / "cml-sign"), "sign", str(conf), "-k", str(pki / "ssig_cml.key"), "--cert",
                    str(pki / "ssig_cml.chain")], check=True, capture_output=True)
    return conf.read_bytes(), conf.with_suffix(".sig").read_bytes(), conf.with_suffix(".cert").read_bytes()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=20)
    ap.add_argument("--ref-runs", type=int, default=3, help="RSA-4096 key generations (reference)")
    ap.add_argument("--key-type", default="rsa3072", help="PKI key type (cml-sign pki --key-type)")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="cml-bench-create-"))
    procs: list[subprocess.Popen[bytes]] = []
    try:
        pki = tmp / "pki"
        subprocess.run([str(BIN / "cml-sign"), "pki", str(pki), "--key-type", args.key_type], check=True,
                       capture_output=True)
        base = tmp / "base"
        (base / "tokens").mkdir(parents=True)
        shutil.copy(pki / "ssig_rootca.cert", base / "tokens" / "ssig_rootca.cert")
        (base / "device.conf").write_text(DEVICE_CONF)
        common = ["--foreground", "--base-dir", str(base), "--log-dir", str(tmp / "logs")]
        scd_sock, cmld_sock = tmp / "scd.sock", tmp / "cmld.sock"
        procs.append(start([str(BIN / "scd"), *common, "--socket", str(scd_sock)], scd_sock,
                           socket.SOCK_SEQPACKET, tmp / "scd.err"))
        procs.append(start([str(BIN / "cmld"), *common, "--socket", str(cmld_sock), "--scd-socket", str(scd_sock),
                            "--run-dir", str(tmp / "run"), "--netns-dir", str(tmp / "netns"), "--no-autostart"],
                           cmld_sock, socket.SOCK_STREAM, tmp / "cmld.err"))
        configs = [signed_config(tmp, pki, f"bench{i}") for i in range(args.runs)]
        times = []
        client = ControlClient(cmld_sock)
        for raw, sig, cert in configs:
            t0 = time.perf_counter()
            reply = client.request(ControllerToDaemon(command=ControllerToDaemon.CREATE_CONTAINER,
                                                      container_config_file=raw, container_config_signature=sig,
                                                      container_config_certificate=cert))
            times.append(time.perf_counter() - t0)
            if reply.code != DaemonToController.CONTAINER_CONFIG or not reply.container_configs:
                print(f"create failed: {reply}", file=sys.stderr)
                return 1
        tokens = sorted((base / "tokens").glob("*.p12"))
        if len(tokens) != args.runs:
            print(f"expected {args.runs} tokens, found {len(tokens)}", file=sys.stderr)
            return 1
        ref = []
        for _ in range(args.ref_runs):
            t0 = time.perf_counter()
            subprocess.run(["openssl", "genpkey", "-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:4096",
                            "-out", str(tmp / "ref.key")], check=True, capture_output=True)
            ref.append(time.perf_counter() - t0)
        ours, theirs = statistics.median(times), statistics.median(ref)
        print(f"commit {git('rev-parse', '--short', 'HEAD')}, {args.runs} creates (signed config, SOFT token)")
        print(f"{'create container (cmld+scd)':40s} median {ours * 1000:8.1f} ms   p90 "
              f"{sorted(times)[int(len(times) * 0.9) - 1] * 1000:8.1f} ms")
        print(f"{'reference: RSA-4096 keygen (openssl)':40s} median {theirs * 1000:8.1f} ms")
        print(f"ratio ours/reference: {ours / theirs:.3f}")
        if args.json:
            args.json.write_text(json.dumps({"create_ms": ours * 1000, "rsa4096_keygen_ms": theirs * 1000,
                                             "ratio": ours / theirs, "runs": args.runs}))
        return 0
    finally:
        for p in procs:
            p.terminate()
            try:
                p.wait(15)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
