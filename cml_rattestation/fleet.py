"""Attest many devices at once (the Keylime fleet case): every HOST[:PORT] of a hosts file, up to
`--concurrency` in flight, each with its own nonce and the full set of checks.

Prints one line per device as it completes (or one JSON object per line with --json), then a
summary; exits 0 only if every device verified.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import json
import time
from pathlib import Path

from cml_common.messages.rattestation_config_pb2 import RAttestationConfig

from . import transport
from .attest import EXIT_FAILED, EXIT_OK, EXIT_USAGE, attest_one

MAX_HOSTS = 100_000


def read_hosts(path: Path) -> list[str]:
    hosts = []
    for raw in path.read_text().splitlines():
        entry = raw.split("#", 1)[0].strip()
        if entry:
            hosts.append(entry)
    if len(hosts) > MAX_HOSTS:
        raise ValueError(f"{path}: more than {MAX_HOSTS} hosts")
    return hosts


def run_fleet(args: argparse.Namespace, cfg: RAttestationConfig, cfg_path: Path,
              tls: transport.TlsFiles | None) -> int:
    try:
        hosts = read_hosts(args.fleet)
    except (OSError, ValueError) as e:
        print(f"cml-rattestation: {e}")
        return EXIT_USAGE
    if not hosts:
        print(f"cml-rattestation: {args.fleet} lists no hosts")
        return EXIT_USAGE
    t0 = time.monotonic()
    failed = 0
    with concurrent.futures.ThreadPoolExecutor(max_workers=max(1, min(args.concurrency, 256))) as pool:
        futures = {pool.submit(attest_one, h, cfg, cfg_path, args, tls): h for h in hosts}
        for fut in concurrent.futures.as_completed(futures):
            code, result = fut.result()
            if code != EXIT_OK:
                failed += 1
            if args.json:
                print(json.dumps(result), flush=True)
                continue
            bad = [c for c in result["checks"] if c["status"] == "FAIL"]  # type: ignore[attr-defined]
            why = result.get("error") or (f"{bad[0]['name']}: {bad[0]['detail']}" if bad else "")
            print(f"{futures[fut]}: {'SUCCESSFUL' if code == EXIT_OK else 'FAILED ' + str(why)}", flush=True)
    secs = time.monotonic() - t0
    print(f"fleet: {len(hosts) - failed} of {len(hosts)} devices verified, {failed} failed, in {secs:.2f} s "
          f"({len(hosts) / secs:.1f} attestations/s)", flush=True)
    return EXIT_OK if failed == 0 else EXIT_FAILED
