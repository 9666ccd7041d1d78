"""Pairing record of a software/PKCS#11 token: proof that PROVISION_PIN bound it to this device.

We store only HMAC-SHA256(pairing secret, token UUID), never the secret, so the record neither
reveals the device's pairing secret nor can be copied to another token.
"""

from __future__ import annotations

import hashlib
import hmac
from pathlib import Path

from cml_common.fsutil import write_atomic

from .secretbuf import equal

VERSION = b"v1:"


def _tag(secret: bytes | bytearray, uuid: str) -> bytes:
    return hmac.new(bytes(secret), b"cml-token-pairing|" + uuid.encode(), hashlib.sha256).hexdigest().encode()


class PairingRecord:
    def __init__(self, path: Path, uuid: str) -> None:
        self.path = path
        self.uuid = uuid

    def exists(self) -> bool:
        return self.path.exists()

    def bind(self, secret: bytes | bytearray) -> None:
        if not secret:
            raise ValueError("an empty pairing secret cannot pair a token")
        write_atomic(self.path, VERSION + _tag(secret, self.uuid) + b"\n")

    def matches(self, secret: bytes | bytearray) -> bool:
        stored = self.path.read_bytes().strip()
        return stored.startswith(VERSION) and equal(stored[len(VERSION):], _tag(secret, self.uuid))

    def remove(self) -> None:
        self.path.unlink(missing_ok=True)
