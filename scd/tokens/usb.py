"""USB token: a SmartCard-HSM reached through PC/SC (pcscd) with pyscard (inventory §4.4).

The reader is the one whose PC/SC name contains `usbtoken_serial` (USB CCID readers carry their
serial number in the name). Auth code = pairing secret ‖ PIN (at most 16 bytes), verified by the
card, which keeps its own retry counter. PROVISION_PIN changes the transport PIN into the auth
code and generates the master key on the card. Wrapping derives a 32-byte KEK on the card from
the master key and the container UUID, then AES-256 key wrap per RFC 3394 (default IV): the blob
is the key plus 8 bytes, the original's format.

Unlike the original, LOCK also forgets the cached auth code (nothing here relays APDUs yet).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from cryptography.hazmat.primitives.keywrap import InvalidUnwrap, aes_key_unwrap, aes_key_wrap

from ..secretbuf import wipe
from . import schsm
from .base import CorruptBlob, Token, TokenError, TokenLocked, WrongPin

log = logging.getLogger(__name__)


class UsbToken(Token):
    removable = True

    def __init__(self, uuid: str, reader_serial: str) -> None:
        super().__init__(uuid)
        self.serial = reader_serial
        self._conn: Any = None
        self._auth: bytearray | None = None
        self.reader = ""

    # ------------------------------------------------------------ PC/SC

    def _connect(self) -> None:
        from smartcard.Exceptions import CardConnectionException, NoCardException
        from smartcard.pcsc.PCSCExceptions import BaseSCardException
        from smartcard.System import readers

        try:
            matches = [r for r in readers() if self.serial in str(r)]
        except BaseSCardException as e:
            raise TokenError(f"PC/SC unavailable: {e}") from e
        if not matches:
            raise TokenError(f"no smartcard reader matches serial {self.serial!r}")
        conn = matches[0].createConnection()
        try:
            conn.connect()
        except (CardConnectionException, NoCardException) as e:
            raise TokenError(f"no card in reader {matches[0]}: {e}") from e
        self._close_conn()
        self._conn, self.reader = conn, str(matches[0])
        schsm.select(self._tx)

    def _close_conn(self) -> None:
        if self._conn is not None:
            try:
                self._conn.disconnect()
            except Exception:  # a vanished card cannot be disconnected cleanly
                log.debug("disconnect from %s failed", self.reader)
            self._conn = None

    def _tx(self, command: bytes) -> tuple[bytes, int]:
        from smartcard.Exceptions import CardConnectionException

        if self._conn is None:
            raise TokenError("USB token not connected")
        try:
            data, sw1, sw2 = self._conn.transmit(list(command))
        except CardConnectionException as e:
            raise TokenError(f"card in {self.reader} did not answer: {e}") from e
        return bytes(data), (sw1 << 8) | sw2

    # ------------------------------------------------------------ Token interface

    def open(self) -> None:
        if not self.serial:
            raise TokenError("USB token needs usbtoken_serial (the reader's serial)")
        try:
            self._connect()
        except schsm.CardError as e:
            raise TokenError(f"not a SmartCard-HSM: {e}") from e

    def present(self) -> bool:
        """The card still answers SELECT (reconnecting once if the connection was reset)."""
        try:
            schsm.select(self._tx)
            return True
        except (TokenError, schsm.CardError):
            pass
        try:
            self._connect()
            return True
        except (TokenError, schsm.CardError):
            return False

    def is_paired(self) -> bool:
        return True  # the pairing lives on the card (the auth code contains the pairing secret)

    @property
    def unlocked(self) -> bool:
        return self._auth is not None

    @staticmethod
    def _auth_code(pin: bytearray, secret: bytearray) -> bytearray:
        code = bytearray(secret) + pin
        if len(code) > schsm.MAX_AUTH:
            wipe(code)
            raise TokenError(f"pairing secret + PIN exceed {schsm.MAX_AUTH} bytes")
        return code

    @staticmethod
    def _pin_status(send: Callable[[], int], what: str, failure: str) -> None:
        """Run a PIN APDU; a wrong PIN and any other status word become their token errors."""
        try:
            sw = send()
        except ValueError as e:
            raise TokenError(str(e)) from e
        if schsm.wrong_pin(sw):
            raise WrongPin(f"card rejected the {what} ({sw & 0xF} retries left on the card)")
        if sw != schsm.SW_OK:
            raise TokenError(f"{failure}: SW {sw:04X}")

    def _verify(self, code: bytearray) -> None:
        self._pin_status(lambda: schsm.verify_pin(self._tx, bytes(code)), "PIN",
                         "PIN verification failed (PIN blocked on the card?)")

    def unlock(self, pin: bytearray, pairing_secret: bytearray) -> None:
        code = self._auth_code(pin, pairing_secret)
        try:
            self._verify(code)
        except TokenError:
            wipe(code)
            raise
        self.lock()
        self._auth = code

    def lock(self) -> None:
        wipe(self._auth)
        self._auth = None

    def _change(self, old: bytearray, new: bytearray) -> None:
        self._pin_status(lambda: schsm.change_pin(self._tx, bytes(old), bytes(new)), "old PIN", "PIN change failed")

    def provision_pin(self, transport_pin: bytearray, new_pin: bytearray, pairing_secret: bytearray) -> None:
        new = self._auth_code(new_pin, pairing_secret)
        try:
            self._change(transport_pin, new)
            self._verify(new)
            schsm.generate_master_key(self._tx)
        except schsm.CardError as e:
            raise TokenError(str(e)) from e
        finally:
            wipe(new)

    def change_pin(self, old_pin: bytearray, new_pin: bytearray, pairing_secret: bytearray) -> None:
        old = self._auth_code(old_pin, pairing_secret)
        new = self._auth_code(new_pin, pairing_secret)
        try:
            self._change(old, new)
        finally:
            wipe(old)
            wipe(new)

    def _kek(self, label: str) -> bytearray:
        if self._auth is None:
            raise TokenLocked(f"USB token {self.uuid} is locked")
        self._verify(self._auth)  # the card may have been reset since UNLOCK
        try:
            return schsm.derive_key(self._tx, (label or self.uuid).encode())
        except (schsm.CardError, ValueError) as e:
            raise TokenError(f"key derivation on the card failed: {e}") from e

    def wrap(self, key: bytes, label: str) -> bytes:
        if len(key) % 8 or len(key) < 16:
            raise TokenError("RFC 3394 wraps only keys of 16+ bytes in multiples of 8")
        kek = self._kek(label)
        try:
            return aes_key_wrap(bytes(kek), key)
        finally:
            wipe(kek)

    def unwrap(self, blob: bytes, label: str) -> bytearray:
        if len(blob) % 8 or len(blob) < 24:
            raise CorruptBlob(f"wrapped key has {len(blob)} bytes, not an RFC 3394 blob")
        kek = self._kek(label)
        try:
            return bytearray(aes_key_unwrap(bytes(kek), blob))
        except InvalidUnwrap as e:
            raise CorruptBlob("wrapped key does not unwrap with this card (altered or foreign)") from e
        finally:
            wipe(kek)

    def remove(self) -> None:
        self.lock()
        self._close_conn()

    def close(self) -> None:
        self.remove()
