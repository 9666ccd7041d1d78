#!/usr/bin/env python3
"""Audit costs, each next to a reference measured in the same run:

1. records written: AuditRecord built, serialised and appended to the journal (chained, fsync'd)
   against a plain append+fsync of the same bytes (the storage floor);
2. records chained: the hash-chain step alone (canonical JSON + SHA-512) against SHA-512 of the
   same bytes;
3. checkpoints signed: CRYPTO_SIGN_DEVICE round trips to a real scd (soft EC P-256 device key)
   against an in-process ECDSA signature of the same statement;
4. the control round trip (LIST_CONTAINERS on one connection) of a cmld with auditing on
   (audit_size 1: a record per command, journal + queue, fsync) against the same cmld build with
   auditing off, alternating blocks.

Everything runs in a temporary directory; the daemons are stopped by PID; nothing is left.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.benchlib import wait_for_socket
from cml_common import framing
from cml_common.auditlog.entry import GENESIS, RECORD, Entry
from cml_common.auditlog.seal import statement
from cml_common.messages.control_pb2 import ControllerToDaemon as C
from cml_common.messages.scd_pb2 import DaemonToToken, TokenToDaemon
from cml_control.client import ControlClient
from cmld.audit.journal import Journal
from cmld.audit.record import make_record

BIN = Path(sys.executable).parent
HOSTED = "hostedmode: true\nsigned_configs: false\ntpm_enabled: false\n"


def per_second(n: int, seconds: float) -> float:
    return n / seconds if seconds > 0 else float("inf")


def timed(n: int, op: Callable[[int], object]) -> float:
    t = time.perf_counter()
    for i in range(n):
        op(i)
    return time.perf_counter() - t


def record_bytes(i: int) -> bytes:
    return make_record("SUA", "CONTAINER_MGMT", "container-start", "7d3c2c1e-0000-4000-8000-000000000001",
                       {"command": "CONTAINER_START", "result": "CONTAINER_START_OK", "client_uid": "0",
                        "client_pid": str(1000 + i)}).SerializeToString(deterministic=True)


def bench_write(tmp: Path, n: int) -> tuple[float, float]:
    d = tmp / "journal"
    d.mkdir()
    j = Journal(d)
    j.open()
    ours = timed(n, lambda i: j.append_record("7d3c2c1e-0000-4000-8000-000000000001", record_bytes(i)))
    line = (j.read_after(0, 1)[0] + "\n").encode()
    fd = os.open(tmp / "floor.log", os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    try:
        def floor(_: int) -> None:
            os.write(fd, line)
            os.fsync(fd)
        ref = timed(n, floor)
    finally:
        os.close(fd)
    return per_second(n, ours), per_second(n, ref)


def bench_chain(n: int) -> tuple[float, float]:
    rec = record_bytes(0)
    prev = GENESIS

    def chain(i: int) -> None:
        nonlocal prev
        prev = Entry(seq=i + 1, time=1700000000, kind=RECORD, prev=prev, subject="s", record=rec).seal().hash

    canon = json.dumps(Entry(1, 0, RECORD, GENESIS, "s", rec).body()).encode()
    return per_second(n, timed(n, chain)), per_second(n, timed(n, lambda i: hashlib.sha512(canon).digest()))


def scd_sign(sock: Path, data: bytes) -> None:
    with socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET) as s:
        s.connect(str(sock))
        req = DaemonToToken(code=DaemonToToken.CRYPTO_SIGN_DEVICE, sign_buf=data)
        framing.send_seqpacket(s, framing.serialize(req))
        body = framing.recv_seqpacket(s)
    assert body is not None and framing.parse(TokenToDaemon, body).code == TokenToDaemon.CRYPTO_SIGN_OK


@contextlib.contextmanager
def daemon(cmd: list[str], sock: Path, name: str, kind: int = socket.SOCK_STREAM) -> Iterator[None]:
    err = (sock.parent / f"{name}.stderr").open("wb")
    proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=err)
    try:
        wait_for_socket(sock, proc, name, kind=kind)
        yield
    finally:
        err.close()
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)


def bench_sign(tmp: Path, n: int) -> tuple[float, float]:
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import ec

    base = tmp / "scd-base"
    (base / "tokens").mkdir(parents=True)
    (base / "device.conf").write_text(HOSTED)
    sock = tmp / "scd.sock"
    data = statement(100, "ab" * 64, 1700000000)
    with daemon([str(BIN / "scd"), "--foreground", "--base-dir", str(base), "--socket", str(sock), "--log-dir",
                 str(tmp / "scd-logs")], sock, "scd", socket.SOCK_SEQPACKET):
        scd_sign(sock, data)  # warm-up
        ours = timed(n, lambda i: scd_sign(sock, data))
    key = ec.generate_private_key(ec.SECP256R1())
    ref = timed(n, lambda i: key.sign(data, ec.ECDSA(hashes.SHA256())))
    return per_second(n, ours), per_second(n, ref)


def bench_roundtrip(tmp: Path, n: int, blocks: int) -> tuple[float, float]:
    """Seconds per LIST_CONTAINERS (audited, unaudited), alternating blocks of n/blocks."""
    socks = {}
    with contextlib.ExitStack() as stack:
        for name, extra in (("on", "audit_size: 1\naudit_checkpoint_records: 1000000\n"), ("off", "")):
            base = tmp / f"cmld-{name}"
            base.mkdir()
            (base / "device.conf").write_text(HOSTED + extra)
            sock = tmp / f"cmld-{name}.sock"
            stack.enter_context(daemon([str(BIN / "cmld"), "--foreground", "--no-autostart", "--base-dir", str(base),
                                        "--socket", str(sock), "--log-dir", str(tmp / f"logs-{name}"),
                                        "--run-dir", str(tmp / f"run-{name}"), "--scd-socket", str(tmp / "none.sock"),
                                        "--tpm2d-socket", str(tmp / "none2.sock")], sock, f"cmld-{name}"))
            socks[name] = sock
        clients = {k: stack.enter_context(ControlClient(v)) for k, v in socks.items()}
        req = C(command=C.LIST_CONTAINERS)
        total = {"on": 0.0, "off": 0.0}
        for c in clients.values():
            for _ in range(50):
                c.request(req)
        per = max(1, n // blocks)
        for _ in range(blocks):
            for k in ("on", "off"):
                total[k] += timed(per, lambda i, c=clients[k]: c.request(req))
        assert (tmp / "cmld-on" / "audit" / "journal.log").stat().st_size > 0
        assert not (tmp / "cmld-off" / "audit").exists()
        return total["on"] / (per * blocks), total["off"] / (per * blocks)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="small counts (smoke test)")
    ap.add_argument("--json", type=Path, help="write the figures here too")
    args = ap.parse_args(argv)
    n_write, n_chain, n_sign, n_rt = (200, 2000, 20, 200) if args.quick else (3000, 50000, 300, 4000)
    tmp = Path(tempfile.mkdtemp(prefix="cml-bench-audit-"))
    try:
        w = bench_write(tmp, n_write)
        ch = bench_chain(n_chain)
        sg = bench_sign(tmp, n_sign)
        on, off = bench_roundtrip(tmp, n_rt, 10 if not args.quick else 2)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    rows = [
        ("records written (chained, fsync each)", f"{w[0]:,.0f}/s", "append+fsync of the same line", f"{w[1]:,.0f}/s",
         w[1] / w[0]),
        ("records chained (JSON + SHA-512)", f"{ch[0]:,.0f}/s", "SHA-512 of the same bytes", f"{ch[1]:,.0f}/s",
         ch[1] / ch[0]),
        ("checkpoints signed (scd round trip)", f"{sg[0]:,.0f}/s", "in-process ECDSA P-256", f"{sg[1]:,.0f}/s",
         sg[1] / sg[0]),
        ("LIST_CONTAINERS, auditing on", f"{on * 1e6:,.0f} us", "same, auditing off", f"{off * 1e6:,.0f} us",
         on / off),
    ]
    width = max(len(r[0]) for r in rows)
    print(f"{'measurement':<{width}}  {'ours':>12}  reference                          {'ref':>12}  ratio")
    for name, ours, ref_name, ref, ratio in rows:
        print(f"{name:<{width}}  {ours:>12}  {ref_name:<33}  {ref:>12}  {ratio:5.2f}x")
    print("ratio: reference rate / ours (rows 1-3, how many times slower than the floor); "
          "time on / time off (row 4)")
    if args.json:
        args.json.write_text(json.dumps({"write_per_s": w, "chain_per_s": ch, "sign_per_s": sg,
                                         "roundtrip_on_off_s": [on, off]}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
