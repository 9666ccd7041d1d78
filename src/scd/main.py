"""scd: the security helper daemon (tokens, keys, verification, device identity)."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Awaitable, Callable

from cml_common import daemon_runner, paths
from cml_common.daemon_args import common_parser

from .server import ScdServer


def main(argv: list[str] | None = None) -> int:
    ap = common_parser("scd", "Security helper daemon (GyroidOS compatible).", paths.SCD_SOCKET)
    args = ap.parse_args(argv)

    async def start(stop: asyncio.Event) -> Callable[[], Awaitable[None]]:
        server = ScdServer(args.socket)
        await server.start()
        return server.close

    return daemon_runner.run(args, "scd", "cml-scd", start)


if __name__ == "__main__":
    sys.exit(main())
