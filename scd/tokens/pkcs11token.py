"""PKCS#11 token (extension, token_type PKCS11): any PKCS#11 module, e.g. SoftHSM2 or an HSM.

The token (slot) is chosen by its label, given in `usbtoken_serial` at TOKEN_ADD, and must be
initialised by the operator with a transport user PIN (`softhsm2-util --init-token ... --pin`).
As for the SmartCard-HSM, the on-token user PIN is an auth code bound to the device:
`hex(pairing secret) ‖ PIN`. PROVISION_PIN replaces the transport PIN by that auth code and
generates the key-encryption key *on the token*: AES-256, CKA_TOKEN, CKA_SENSITIVE, not
extractable, label `cml-kek-<uuid>`; it never leaves the token. Wrap = AES-256-GCM on the token,
blob `b"CMP1" | 12-byte nonce | ciphertext | 16-byte tag`, the token UUID as associated data.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path
from typing import Any

import pkcs11
from pkcs11 import Attribute, KeyType, Mechanism, ObjectClass
from pkcs11.exceptions import NoSuchKey, PinIncorrect, PinLenRange, PKCS11Error
from pkcs11.mechanisms import GCMParams

from ..pairing import PairingRecord
from .base import AlreadyPaired, CorruptBlob, NotPaired, Token, TokenError, TokenLocked, WrongPin

MAGIC = b"CMP1"
NONCE = 12


def auth_code(pin: bytearray, secret: bytearray) -> str:
    """python-pkcs11 takes PINs as str only, so this copy cannot be wiped (a Python limit)."""
    return bytes(secret).hex() + bytes(pin).decode("utf-8", "strict")


class Pkcs11Token(Token):
    def __init__(self, uuid: str, module: Path, label: str, tokens_dir: Path) -> None:
        super().__init__(uuid)
        self.module = module
        self.label = label
        self.kek_label = f"cml-kek-{uuid}"
        self.pairing = PairingRecord(tokens_dir / f"{uuid}.pkcs11.paired", uuid)
        self._token: Any = None
        self._session: Any = None
        self._kek: Any = None

    def open(self) -> None:
        if not self.label:
            raise TokenError("PKCS#11 token label missing (usbtoken_serial)")
        try:
            self._token = pkcs11.lib(str(self.module)).get_token(token_label=self.label)
        except (PKCS11Error, RuntimeError, OSError) as e:
            raise TokenError(f"PKCS#11 token {self.label!r} via {self.module}: {type(e).__name__} {e}") from e

    def _login(self, pin: str) -> Any:
        try:
            return self._token.open(rw=True, user_pin=pin)
        except (PinIncorrect, PinLenRange, UnicodeDecodeError) as e:
            raise WrongPin(f"PKCS#11 token {self.label!r}: PIN rejected") from e
        except PKCS11Error as e:
            raise TokenError(f"PKCS#11 login to {self.label!r} failed: {type(e).__name__}") from e

    def is_paired(self) -> bool:
        return self.pairing.exists()

    @property
    def unlocked(self) -> bool:
        return self._kek is not None

    def unlock(self, pin: bytearray, pairing_secret: bytearray) -> None:
        if not self.pairing.exists():
            raise NotPaired(f"PKCS#11 token {self.label!r} is not paired (PROVISION_PIN first)")
        self.lock()  # the login state is per token: log out before checking the PIN again
        session = self._login(auth_code(pin, pairing_secret))
        try:
            kek = session.get_key(object_class=ObjectClass.SECRET_KEY, key_type=KeyType.AES, label=self.kek_label)
        except (NoSuchKey, PKCS11Error) as e:
            session.close()
            raise TokenError(f"PKCS#11 token {self.label!r} has no key {self.kek_label}") from e
        self._session, self._kek = session, kek

    def lock(self) -> None:
        if self._session is not None:
            with contextlib.suppress(PKCS11Error):
                self._session.close()
        self._session = self._kek = None

    def provision_pin(self, transport_pin: bytearray, new_pin: bytearray, pairing_secret: bytearray) -> None:
        if self.pairing.exists():
            raise AlreadyPaired(f"PKCS#11 token {self.label!r} is paired already")
        if not new_pin or not pairing_secret:
            raise TokenError("new PIN and pairing secret are required")
        transport = bytes(transport_pin).decode()
        self.lock()
        session = self._login(transport)
        try:
            if list(session.get_objects({Attribute.LABEL: self.kek_label})):
                raise AlreadyPaired(f"PKCS#11 token {self.label!r} already holds {self.kek_label}")
            session.generate_key(KeyType.AES, 256, label=self.kek_label, store=True, template={
                Attribute.SENSITIVE: True, Attribute.EXTRACTABLE: False, Attribute.PRIVATE: True,
                Attribute.ENCRYPT: True, Attribute.DECRYPT: True, Attribute.WRAP: False, Attribute.UNWRAP: False})
            session.set_pin(transport, auth_code(new_pin, pairing_secret))
        except PKCS11Error as e:
            raise TokenError(f"PKCS#11 provisioning of {self.label!r} failed: {type(e).__name__}") from e
        finally:
            session.close()
        self.pairing.bind(pairing_secret)

    def change_pin(self, old_pin: bytearray, new_pin: bytearray, pairing_secret: bytearray) -> None:
        if not self.pairing.exists():
            self.provision_pin(old_pin, new_pin, pairing_secret)
            return
        if not new_pin:
            raise TokenError("the new PIN is empty")
        old = auth_code(old_pin, pairing_secret)
        # C_SetPIN checks the old PIN itself; reuse the logged-in session of an unlocked token.
        own = self._session is None
        session = self._login(old) if own else self._session
        try:
            session.set_pin(old, auth_code(new_pin, pairing_secret))
        except (PinIncorrect, PinLenRange) as e:
            raise WrongPin(f"PKCS#11 token {self.label!r}: old PIN rejected") from e
        except PKCS11Error as e:
            raise TokenError(f"PKCS#11 PIN change on {self.label!r} failed: {type(e).__name__}") from e
        finally:
            if own:
                session.close()

    def wrap(self, key: bytes, label: str) -> bytes:
        if self._kek is None:
            raise TokenLocked(f"PKCS#11 token {self.label!r} is locked")
        nonce = os.urandom(NONCE)
        try:
            ct = self._kek.encrypt(key, mechanism=Mechanism.AES_GCM,
                                   mechanism_param=GCMParams(nonce, self.uuid.encode(), 128))
        except PKCS11Error as e:
            raise TokenError(f"PKCS#11 wrap failed: {type(e).__name__}") from e
        return MAGIC + nonce + bytes(ct)

    def unwrap(self, blob: bytes, label: str) -> bytearray:
        if self._kek is None:
            raise TokenLocked(f"PKCS#11 token {self.label!r} is locked")
        if not blob.startswith(MAGIC) or len(blob) < len(MAGIC) + NONCE + 16:
            raise CorruptBlob(f"wrapped key ({len(blob)} bytes) is not a CMP1 blob")
        nonce = blob[len(MAGIC):len(MAGIC) + NONCE]
        try:
            return bytearray(self._kek.decrypt(blob[len(MAGIC) + NONCE:], mechanism=Mechanism.AES_GCM,
                                               mechanism_param=GCMParams(nonce, self.uuid.encode(), 128)))
        except PKCS11Error as e:
            raise CorruptBlob(f"wrapped key does not decrypt on the token ({type(e).__name__})") from e

    def remove(self) -> None:
        self.lock()
        self._token = None
