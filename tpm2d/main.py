"""tpm2d: the TPM 2.0 daemon (attestation, measurement list, sealed disk key)."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Awaitable, Callable

from cml_common import daemon_runner, paths
from cml_common.daemon_args import common_parser

from .server import Tpm2dServer


def main(argv: list[str] | None = None) -> int:
    ap = common_parser("tpm2d", "TPM 2.0 daemon (GyroidOS compatible).", paths.TPM2D_SOCKET)
    args = ap.parse_args(argv)

    async def start(stop: asyncio.Event) -> Callable[[], Awaitable[None]]:
        server = Tpm2dServer(args.socket, stop)
        await server.start()
        return server.close

    return daemon_runner.run(args, "tpm2d", "cml-tpm2d", start)


if __name__ == "__main__":
    sys.exit(main())
