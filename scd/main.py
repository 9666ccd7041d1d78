"""scd: the security helper daemon (tokens, keys, verification, device identity)."""

from __future__ import annotations

import asyncio
import logging
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path

from cml_common import daemon_runner, paths
from cml_common.daemon_args import common_parser
from cml_common.messages.scd_pb2 import DaemonToToken, TokenType
from cml_common.paths import Layout

from . import watchdog
from .devicekey import DeviceKeyError, FileDeviceKey
from .identity import DeviceIdentity, IdentityError
from .server import ScdServer
from .service import Scd
from .tokenmgr import Factory, TokenManager
from .tokens.base import Token
from .tokens.soft import SoftToken

log = logging.getLogger("scd")


def token_factories(layout: Layout, pkcs11_module: Path | None) -> dict[int, Factory]:
    def soft(req: DaemonToToken, uuid: str) -> Token:
        return SoftToken(uuid, layout.tokens)

    factories: dict[int, Factory] = {TokenType.SOFT: soft}
    from .tokens import registry  # optional token types whose libraries load lazily

    factories.update(registry.optional_factories(layout, pkcs11_module))
    return factories


def make_identity(layout: Layout) -> DeviceIdentity | None:
    """The device identity, or None (logged) when its files are damaged: scd then still serves
    tokens and verification, and answers the identity commands with their error codes."""
    try:
        identity = DeviceIdentity(layout, FileDeviceKey.load_or_create(layout.tokens / "device.key"))
        identity.setup()
    except (DeviceKeyError, IdentityError, OSError) as e:
        log.error("device identity unavailable: %s", e)
        return None
    return identity


def main(argv: list[str] | None = None) -> int:
    ap = common_parser("scd", "Security helper daemon (GyroidOS compatible).", paths.SCD_SOCKET)
    ap.add_argument("--pkcs11-module", type=Path,
                    help="PKCS#11 module for token_type PKCS11 (e.g. /usr/lib/softhsm/libsofthsm2.so)")
    ap.add_argument("--se-watchdog-interval", type=float, default=10.0,
                    help="seconds between presence checks of USB tokens (default %(default)s)")
    args = ap.parse_args(argv)

    async def start(stop: asyncio.Event) -> Callable[[], Awaitable[None]]:
        layout = Layout(args.base_dir)
        layout.tokens.mkdir(parents=True, exist_ok=True, mode=0o700)
        if not (layout.tokens / "ssig_rootca.cert").exists():
            log.warning("no software-signing root %s: only registered CAs can verify signatures",
                        layout.tokens / "ssig_rootca.cert")
        identity = await asyncio.to_thread(make_identity, layout)
        tokens = TokenManager(token_factories(layout, args.pkcs11_module))
        server = ScdServer(args.socket, Scd(layout, tokens, identity))
        await server.start()
        dog = asyncio.create_task(watchdog.watch(tokens, server.send_event, args.se_watchdog_interval,
                                                 min(1.0, args.se_watchdog_interval)))

        async def close() -> None:
            dog.cancel()
            await server.close()
            await asyncio.to_thread(tokens.close_all)

        return close

    return daemon_runner.run(args, "scd", "cml-scd", start)


if __name__ == "__main__":
    sys.exit(main())
