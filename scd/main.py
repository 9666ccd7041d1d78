"""scd: the security helper daemon (tokens, keys, verification, device identity)."""

from __future__ import annotations

import asyncio
import logging
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path

from cml_common import daemon_runner, paths
from cml_common.daemon_args import common_parser
from cml_common.messages.device_pb2 import DeviceConfig
from cml_common.messages.scd_pb2 import DaemonToToken, TokenType
from cml_common.paths import Layout
from cml_common.textconfig import ConfigError, load_text_file

from . import watchdog
from .devicekey import DeviceKey, DeviceKeyError, FileDeviceKey
from .identity import DeviceIdentity, IdentityError
from .server import ScdServer
from .service import Scd
from .tokenmgr import Factory, TokenManager
from .tokens.base import Token
from .tokens.soft import SoftToken
from .tpm_devicekey import TpmDeviceKey

log = logging.getLogger("scd")


def token_factories(layout: Layout, pkcs11_module: Path | None) -> dict[int, Factory]:
    def soft(req: DaemonToToken, uuid: str) -> Token:
        return SoftToken(uuid, layout.tokens)

    factories: dict[int, Factory] = {TokenType.SOFT: soft}
    from .tokens import registry  # optional token types whose libraries load lazily

    factories.update(registry.optional_factories(layout, pkcs11_module))
    return factories


def tpm_enabled(layout: Layout) -> bool:
    """device.conf's tpm_enabled (its proto default is true); no or a broken device.conf: False,
    so a device never changes its identity key because a file went missing."""
    if not layout.device_conf.exists():
        return False
    try:
        return bool(load_text_file(layout.device_conf, DeviceConfig).tpm_enabled)
    except ConfigError as e:
        log.error("device.conf unreadable (%s): using the soft device key", e)
        return False


def make_identity(layout: Layout, device_key: str, tpm2d_socket: Path) -> DeviceIdentity | None:
    """The device identity, or None (logged) when its files are damaged or the TPM key is not
    available: scd then still serves tokens and verification, and answers the identity commands
    with their error codes. Never a silent fall-back from the TPM key to a soft key."""
    try:
        use_tpm = device_key == "tpm" or (device_key == "auto" and tpm_enabled(layout))
        key: DeviceKey = (TpmDeviceKey(tpm2d_socket) if use_tpm
                          else FileDeviceKey.load_or_create(layout.tokens / "device.key"))
        log.info("device key: %s", f"in the TPM (through tpm2d at {tpm2d_socket})" if use_tpm
                 else layout.tokens / "device.key")
        identity = DeviceIdentity(layout, key)
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
    ap.add_argument("--device-key", choices=("auto", "file", "tpm"), default="auto",
                    help="auto: in the TPM if device.conf has tpm_enabled (default), else tokens/device.key")
    ap.add_argument("--tpm2d-socket", type=Path, default=paths.TPM2D_SOCKET, help="default %(default)s")
    args = ap.parse_args(argv)

    async def start(stop: asyncio.Event) -> Callable[[], Awaitable[None]]:
        layout = Layout(args.base_dir)
        layout.tokens.mkdir(parents=True, exist_ok=True, mode=0o700)
        if not (layout.tokens / "ssig_rootca.cert").exists():
            log.warning("no software-signing root %s: only registered CAs can verify signatures",
                        layout.tokens / "ssig_rootca.cert")
        identity = await asyncio.to_thread(make_identity, layout, args.device_key, args.tpm2d_socket)
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
