"""Token types beyond the software token, enabled by scd's configuration. Their libraries
(python-pkcs11, pyscard) are imported only when the type is configured."""

from __future__ import annotations

from pathlib import Path

from cml_common.messages.scd_pb2 import DaemonToToken, TokenType
from cml_common.paths import Layout

from ..tokenmgr import Factory
from .base import Token


def optional_factories(layout: Layout, pkcs11_module: Path | None) -> dict[int, Factory]:
    factories: dict[int, Factory] = {}
    if pkcs11_module is not None:
        from .pkcs11token import Pkcs11Token

        def p11(req: DaemonToToken, uuid: str) -> Token:
            return Pkcs11Token(uuid, pkcs11_module, req.usbtoken_serial, layout.tokens)

        factories[TokenType.PKCS11] = p11

    from .usb import UsbToken

    def usb(req: DaemonToToken, uuid: str) -> Token:
        return UsbToken(uuid, req.usbtoken_serial)

    factories[TokenType.USB] = usb
    return factories
