"""cml-rattestation: verify a device's remote attestation (GyroidOS `rattestation` compatible).

    cml-rattestation [<host>[:port] [<config>]]          # the original's invocation
    cml-rattestation HOST CONFIG [--json] [--state-dir D] [--strict] [--make-policy FILE]
    cml-rattestation HOST CONFIG --grpc --tls-cert C --tls-key K --tls-ca CA   # mutual TLS
    cml-rattestation --fleet HOSTS_FILE CONFIG --grpc ... [--concurrency N]    # many devices

Prints one line per check (PASS/FAIL/SKIP), then the original's banner `REMOTE ATTESTATION:
SUCCESSFUL` or `FAILED`. Exit codes: 0 every check passed (SKIP allowed unless --strict),
1 a check failed, 2 usage or config error, 3 the device could not be reached.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from cml_common.textconfig import ConfigError

from . import transport
from .attest import EXIT_USAGE, attest_one, load_config


def parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="cml-rattestation", description="Verify a CML device's remote attestation.")
    ap.add_argument("host", nargs="?", default="127.0.0.1", help="device, HOST[:PORT] (default 127.0.0.1)")
    ap.add_argument("config", nargs="?", default="rattestation.conf", type=Path, help="RAttestationConfig text file")
    ap.add_argument("--json", action="store_true", help="one JSON object instead of check lines")
    ap.add_argument("--timeout", type=float, default=30.0)
    ap.add_argument("--state-dir", type=Path, default=os.environ.get("CML_RATTESTATION_STATE"),
                    help="remember each device's TPM clock to detect replayed quotes")
    ap.add_argument("--strict", action="store_true", help="SKIPped checks fail too")
    ap.add_argument("--make-policy", type=Path, metavar="FILE",
                    help="write an event log reference policy from this device's (verified) boot")
    ap.add_argument("--grpc", action="store_true", help="use the gRPC service with mutual TLS")
    ap.add_argument("--tls-cert", type=Path)
    ap.add_argument("--tls-key", type=Path)
    ap.add_argument("--tls-ca", type=Path, help="CA the device's TLS certificate must chain to")
    ap.add_argument("--tls-server-name", help="expected name in the device's TLS certificate")
    ap.add_argument("--fleet", type=Path, metavar="HOSTS_FILE", help="attest every HOST[:PORT] listed (one a line)")
    ap.add_argument("--concurrency", type=int, default=16)
    return ap


def print_result(result: dict[str, object], as_json: bool) -> None:
    if as_json:
        print(json.dumps(result), flush=True)
        return
    if "error" in result:
        print(f"FAIL connection: {result['error']}")
    for c in result["checks"]:  # type: ignore[attr-defined]
        print(f"{c['status']} {c['name']}: {c['detail']}")
    print("---------------------------")
    print(f"REMOTE ATTESTATION: {'SUCCESSFUL' if result['ok'] else 'FAILED'}")
    print("---------------------------", flush=True)


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    if args.fleet:
        cfg_path = Path(args.host) if args.config == Path("rattestation.conf") and args.host != "127.0.0.1" \
            else args.config
    else:
        cfg_path = args.config
    try:
        cfg = load_config(cfg_path)
    except ConfigError as e:
        print(f"cml-rattestation: Failed to read config file: {e}", file=sys.stderr)
        return EXIT_USAGE
    tls = None
    if args.grpc:
        if not (args.tls_cert and args.tls_key and args.tls_ca):
            print("cml-rattestation: --grpc needs --tls-cert, --tls-key and --tls-ca", file=sys.stderr)
            return EXIT_USAGE
        tls = transport.TlsFiles(args.tls_cert, args.tls_key, args.tls_ca, args.tls_server_name)
    if args.fleet:
        from .fleet import run_fleet

        return run_fleet(args, cfg, cfg_path, tls)
    code, result = attest_one(args.host, cfg, cfg_path, args, tls)
    print_result(result, args.json)
    return code


if __name__ == "__main__":
    sys.exit(main())
