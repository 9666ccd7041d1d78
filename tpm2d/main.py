"""tpm2d: the TPM 2.0 daemon (attestation, measurement list, sealed disk key).

    tpm2d [--tcti device:/dev/tpmrm0] [-n|--nokeys] [--attest-listen 0.0.0.0:9505]
          [--grpc-listen HOST:PORT --grpc-client-ca CA.pem [--grpc-cert C --grpc-key K]] ...

The TCTI string uses tpm2-tools' syntax (`device:/dev/tpmrm0`, `swtpm:host=127.0.0.1,port=2321`,
`mssim:...`). `-s/--sim` is the original's simulator switch: `swtpm:host=127.0.0.1,port=2321`.
`-n/--nokeys` as the original: no attestation key, no TCP listener, and `/dev/tpm0`.
"""

from __future__ import annotations

import asyncio
import logging
import os
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path

from cml_common import daemon_runner, paths
from cml_common.daemon_args import common_parser

log = logging.getLogger("tpm2d")
DEFAULT_TCTI = "device:/dev/tpmrm0"
SIM_TCTI = "swtpm:host=127.0.0.1,port=2321"


def split_listen(text: str, what: str) -> tuple[str, int]:
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit() or not 0 <= int(port) < 65536:
        raise SystemExit(f"tpm2d: {what} must be HOST:PORT, got {text!r}")
    return host.strip("[]") or "0.0.0.0", int(port)  # noqa: S104 (the original listens on all)


def main(argv: list[str] | None = None) -> int:
    ap = common_parser("tpm2d", "TPM 2.0 daemon (GyroidOS compatible).", paths.TPM2D_SOCKET)
    ap.add_argument("--tcti", help=f"TPM access, tpm2-tools syntax (default {DEFAULT_TCTI})")
    ap.add_argument("-s", "--sim", action="store_true", help=f"use the TPM simulator ({SIM_TCTI})")
    ap.add_argument("-n", "--nokeys", action="store_true",
                    help="no attestation key and no attestation listener; /dev/tpm0 by default")
    ap.add_argument("--attest-listen", default="0.0.0.0:9505", help="TCP attestation server (default %(default)s)")
    ap.add_argument("--grpc-listen", help="gRPC attestation service with mutual TLS, HOST:PORT (off by default)")
    ap.add_argument("--grpc-cert", type=Path, help="TLS certificate chain (default <base>/tokens/device.cert)")
    ap.add_argument("--grpc-key", type=Path, help="TLS key (default <base>/tokens/device.key, scd's soft key)")
    ap.add_argument("--grpc-client-ca", type=Path, help="CA(s) a verifier's client certificate must chain to")
    ap.add_argument("--ml-state", type=Path, default=Path("/run/cml-tpm2d/ml.json"),
                    help="measurement list kept across tpm2d restarts, on a tmpfs (default %(default)s)")
    ap.add_argument("--ima-log", type=Path, help="IMA binary measurement list (default: securityfs)")
    ap.add_argument("--event-log", type=Path, help="UEFI TCG2 event log (default: securityfs)")
    args = ap.parse_args(argv)
    tcti = args.tcti or (SIM_TCTI if args.sim else ("device:/dev/tpm0" if args.nokeys else DEFAULT_TCTI))
    attest = None if args.nokeys else split_listen(args.attest_listen, "--attest-listen")
    if args.grpc_listen and not args.grpc_client_ca:
        ap.error("--grpc-listen needs --grpc-client-ca (mutual TLS)")
    # The TSS logs its own errors on stderr for conditions we handle (a missing handle is how we
    # find out that a key must be created); tpm2d logs what matters itself.
    os.environ.setdefault("TSS2_LOG", "all+NONE")

    async def start(stop: asyncio.Event) -> Callable[[], Awaitable[None]]:
        from .control import ControlServer
        from .core import Core, Settings
        from .rcontrol import RemoteServer

        settings = Settings(tcti=tcti, base=args.base_dir, no_keys=args.nokeys, ml_state=args.ml_state)
        if args.ima_log:
            settings.ima_log = args.ima_log
        if args.event_log:
            settings.event_log = args.event_log
        core = Core(settings)
        try:
            await asyncio.wrap_future(core.submit(core.start))
        except Exception as e:
            core.shutdown()
            raise RuntimeError(f"TPM start-up failed: {e}") from e
        control = ControlServer(args.socket, core, stop)
        await control.start()
        remote = None
        grpc_server = None
        try:
            if attest is not None:
                remote = RemoteServer(attest[0], attest[1], core)
                await remote.start()
            if args.grpc_listen:
                from .grpc_service import GrpcServer

                tokens = args.base_dir / "tokens"
                grpc_server = GrpcServer(args.grpc_listen, core, args.grpc_cert or tokens / "device.cert",
                                         args.grpc_key or tokens / "device.key", args.grpc_client_ca)
                await grpc_server.start()
        except Exception:
            await control.close()
            if remote:
                await remote.close()
            await asyncio.to_thread(core.shutdown)
            raise

        async def close() -> None:
            if grpc_server is not None:
                await grpc_server.close()
            if remote is not None:
                await remote.close()
            await control.close()
            await asyncio.to_thread(core.shutdown)

        return close

    return daemon_runner.run(args, "tpm2d", "cml-tpm2d", start)


if __name__ == "__main__":
    sys.exit(main())
