"""Container keys and token unlock (the original's c_smartcard), done through scd.

Each container with a token has a 96-byte random key, wrapped by its token and stored in
`keys/<uuid>.key`. cmld never holds a KEK or a PIN longer than one request: scd unlocks the token
with the PIN and the device's pairing secret, wraps or unwraps, and is locked again right after.
Every failure carries the control reply the original gives for it.
"""

from __future__ import annotations

import logging
import secrets
from collections.abc import Mapping
from pathlib import Path

from cml_common.fsutil import write_atomic
from cml_common.messages.container_pb2 import ContainerTokenType, ContainerUsbType
from cml_common.messages.control_pb2 import DaemonToController
from cml_common.messages.scd_pb2 import TokenType
from cml_common.paths import Layout
from cmld.audit import events
from cmld.clients.scd import (
    PAIRED_MARKER,
    CorruptKeyFile,
    LockedTillReboot,
    PinRejected,
    ScdClient,
    ScdCommandFailed,
    ScdError,
    TokenUnpaired,
)
from cmld.containers.container import Container
from cmld.crypt import scrub
from cmld.errors import TokenFailure

log = logging.getLogger(__name__)
D = DaemonToController
KEY_LEN = 96
MAX_KEYFILE = 4096
PAIRING_SECRET_LEN = 8
_TOKEN_TYPES = {ContainerTokenType.SOFT: TokenType.SOFT, ContainerTokenType.USB: TokenType.USB,
                ContainerTokenType.PKCS11: TokenType.PKCS11}


def wipe(buf: bytearray | None) -> None:
    if buf is not None:
        buf[:] = bytes(len(buf))


class ContainerKeys:
    def __init__(self, layout: Layout, scd: ScdClient) -> None:
        self.layout = layout
        self.scd = scd

    # ------------------------------------------------------------------ facts

    @staticmethod
    def has_token(c: Container) -> bool:
        return not c.is_c0 and c.config.token_type != ContainerTokenType.NONE

    @staticmethod
    def _type(c: Container) -> int:
        return _TOKEN_TYPES[c.config.token_type]

    @staticmethod
    def _serial(c: Container) -> str | None:
        """USB and PKCS#11 tokens are named by the container's TOKEN usb_config (reader serial,
        or the PKCS#11 token label)."""
        return next((u.serial for u in c.config.usb_configs if u.type == ContainerUsbType.TOKEN), None)

    def key_file(self, c: Container) -> Path:
        return self.layout.keys / f"{c.uuid}.key"

    def container_dir(self, c: Container) -> Path:
        return self.layout.containers / c.uuid

    def is_paired(self, c: Container) -> bool:
        return (self.container_dir(c) / PAIRED_MARKER).exists()

    def pairing_secret(self) -> bytes:
        """8 random bytes made on first use, binding tokens to this device (as the original)."""
        path = self.layout.keys / "device_pairing_secret"
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            data = secrets.token_bytes(PAIRING_SECRET_LEN)
            write_atomic(path, data, mode=0o600)
            log.info("created the device pairing secret %s", path)
            return data
        if len(data) != PAIRING_SECRET_LEN:
            raise TokenFailure(D.CONTAINER_START_EINTERNAL,
                               f"{path} has {len(data)} bytes, not {PAIRING_SECRET_LEN}: tokens cannot be used")
        return data

    # ------------------------------------------------------------------ token life

    async def add_token(self, c: Container) -> None:
        if not self.has_token(c):
            return
        try:
            await self.scd.token_add(c.uuid, self._type(c), self._serial(c))
        except ScdError as e:
            raise TokenFailure(D.CONTAINER_START_TOKEN_UNINIT, f"token of {c.name} cannot be set up: {e}") from e

    async def remove_token(self, c: Container) -> None:
        """At REMOVE_CONTAINER: the token (its PKCS#12 file for soft tokens), the key file and the
        pairing marker go; a token scd no longer knows is not an error."""
        if self.has_token(c):
            try:
                await self.scd.token_add(c.uuid, self._type(c), self._serial(c))
                await self.scd.token_remove(c.uuid, self._type(c))
            except ScdError as e:
                log.warning("container %s: token removal: %s", c.name, e)
        scrub.destroy_key_file(self.key_file(c))
        (self.container_dir(c) / PAIRED_MARKER).unlink(missing_ok=True)

    # ------------------------------------------------------------------ PIN operations

    async def _unlock(self, c: Container, pin: str, codes: Mapping[str, int]) -> None:
        await self.add_token(c)
        if not self.is_paired(c):
            raise TokenFailure(codes["unpaired"], f"the token of {c.name} is not paired with this device: "
                                                  "change its PIN first (cml-control change_pin)")
        try:
            await self.scd.unlock(c.uuid, pin, self.pairing_secret(), self._type(c))
        except PinRejected as e:
            events.emit("FUA", "TOKEN_MGMT", "unlock-wrong-pin", c.uuid, name=c.name)
            raise TokenFailure(codes["wrong"], f"wrong PIN for the token of {c.name}") from e
        except LockedTillReboot as e:
            events.emit("FUA", "TOKEN_MGMT", "locked-until-reboot", c.uuid, name=c.name)
            raise TokenFailure(D.CONTAINER_LOCKED_TILL_REBOOT,
                               f"the token of {c.name} is locked after three wrong PINs until scd restarts") from e
        except ScdError as e:
            events.emit("FSA", "TOKEN_MGMT", "unlock", c.uuid, name=c.name, error=str(e))
            raise TokenFailure(codes["failed"], f"unlocking the token of {c.name} failed: {e}") from e
        events.emit("SUA", "TOKEN_MGMT", "unlock-successful", c.uuid, name=c.name)

    async def _lock(self, c: Container, code: int) -> None:
        try:
            await self.scd.lock(c.uuid, self._type(c))
        except ScdError as e:
            raise TokenFailure(code, f"locking the token of {c.name} again failed: {e}") from e

    async def container_key(self, c: Container, pin: str) -> bytearray:
        """The start flow: unlock, make-and-wrap (first start) or read-and-unwrap the key, lock."""
        codes = {"unpaired": D.CONTAINER_START_TOKEN_UNPAIRED, "wrong": D.CONTAINER_START_PASSWD_WRONG,
                 "failed": D.CONTAINER_START_UNLOCK_FAILED}
        await self._unlock(c, pin, codes)
        key: bytearray | None = None
        try:
            key = await self._wrapped_or_new(c)
        finally:
            try:
                await self._lock(c, D.CONTAINER_START_LOCK_FAILED)
            except TokenFailure:
                wipe(key)
                raise
        return key

    async def _wrapped_or_new(self, c: Container) -> bytearray:
        path = self.key_file(c)
        try:
            wrapped = path.read_bytes()
        except FileNotFoundError:
            key = bytearray(secrets.token_bytes(KEY_LEN))
            try:
                blob = await self.scd.wrap_key(c.uuid, bytes(key), self._type(c), c.uuid)
                write_atomic(path, blob, mode=0o600)
            except (ScdError, OSError) as e:
                wipe(key)
                raise TokenFailure(D.CONTAINER_START_EINTERNAL, f"wrapping the new key of {c.name}: {e}") from e
            log.info("container %s: new container key, wrapped by its token into %s", c.name, path)
            return key
        except OSError as e:
            raise TokenFailure(D.CONTAINER_START_EINTERNAL, f"reading {path}: {e.strerror}") from e
        if not KEY_LEN <= len(wrapped) <= MAX_KEYFILE:
            raise TokenFailure(D.CONTAINER_START_EINTERNAL,
                               f"key file {path} is corrupt ({len(wrapped)} bytes); wipe the container to "
                               "start over (its data is lost)", corrupt=True)
        try:
            key = bytearray(await self.scd.unwrap_key(c.uuid, wrapped, self._type(c), c.uuid))
        except CorruptKeyFile as e:
            raise TokenFailure(D.CONTAINER_START_EINTERNAL,
                               f"key file {path} does not unwrap with the token of {c.name} (corrupt or from "
                               "another token); wipe the container to start over", corrupt=True) from e
        except ScdError as e:
            raise TokenFailure(D.CONTAINER_START_EINTERNAL, f"unwrapping the key of {c.name}: {e}") from e
        if len(key) != KEY_LEN:
            wipe(key)
            raise TokenFailure(D.CONTAINER_START_EINTERNAL, f"key file {path} unwraps to {len(key)} bytes, "
                                                            f"not {KEY_LEN}", corrupt=True)
        return key

    async def authorize_stop(self, c: Container, pin: str) -> None:
        """Stop with credentials: the PIN is only an authorization check (unlock, then lock)."""
        codes = {"unpaired": D.CONTAINER_STOP_UNLOCK_FAILED, "wrong": D.CONTAINER_STOP_PASSWD_WRONG,
                 "failed": D.CONTAINER_STOP_UNLOCK_FAILED}
        await self._unlock(c, pin, codes)
        await self._lock(c, D.CONTAINER_STOP_LOCK_FAILED)

    async def change_pin(self, c: Container, old: str, new: str) -> bool:
        """PROVISION_PIN (pairs the token with this device) the first time, CHANGE_PIN after that.
        Returns True when this call paired the token."""
        try:
            await self.add_token(c)
        except TokenFailure as e:
            raise TokenFailure(D.CONTAINER_CHANGE_PIN_FAILED, e.message) from e
        try:
            return await self.scd.pair_or_change_pin(self.container_dir(c), c.uuid, old, new,
                                                     self.pairing_secret(), self._type(c))
        except LockedTillReboot as e:
            events.emit("FUA", "TOKEN_MGMT", "locked-until-reboot", c.uuid, name=c.name)
            raise TokenFailure(D.CONTAINER_LOCKED_TILL_REBOOT, f"the token of {c.name} is locked until scd "
                                                               "restarts") from e
        except (ScdCommandFailed, TokenUnpaired) as e:
            events.emit("FUA", "TOKEN_MGMT", "container-change-pin", c.uuid, name=c.name, error=str(e))
            raise TokenFailure(D.CONTAINER_CHANGE_PIN_FAILED, f"PIN change for {c.name} refused: {e}") from e
        except (ScdError, OSError) as e:
            raise TokenFailure(D.CONTAINER_CHANGE_PIN_FAILED, f"PIN change for {c.name} failed: {e}") from e
