"""The interface every token type implements, and the errors scd maps to reply codes.

All methods are blocking (file I/O, key derivation, card APDUs); scd calls them in a worker
thread, one operation per token at a time. PINs and pairing secrets arrive as `bytearray`s that
the caller wipes afterwards.
"""

from __future__ import annotations

import abc

from scd.errors import ScdError


class TokenError(ScdError):
    """The operation failed for a reason other than the credentials (I/O, card, corrupt file)."""


class WrongPin(TokenError):
    """PIN (or pairing secret) rejected; counts towards the lockout."""


class TokenLocked(TokenError):
    """The token must be unlocked first."""


class NotPaired(TokenError):
    """The token has not been paired with this device (no PROVISION_PIN yet)."""


class AlreadyPaired(TokenError):
    """PROVISION_PIN on a token that is paired already: use CHANGE_PIN."""


class CorruptBlob(TokenError):
    """A wrapped key that does not unwrap: truncated, altered, or made by another token."""


class Token(abc.ABC):
    """One token, identified by (type, uuid); created locked by TOKEN_ADD."""

    removable = False  # hardware that can disappear: watched by scd's watchdog

    def __init__(self, uuid: str) -> None:
        self.uuid = uuid

    @abc.abstractmethod
    def open(self) -> None:
        """TOKEN_ADD: load the token, creating it (soft token) when it does not exist yet."""

    @abc.abstractmethod
    def is_paired(self) -> bool: ...

    @property
    @abc.abstractmethod
    def unlocked(self) -> bool: ...

    @abc.abstractmethod
    def unlock(self, pin: bytearray, pairing_secret: bytearray) -> None:
        """Raises WrongPin, NotPaired or TokenError."""

    @abc.abstractmethod
    def lock(self) -> None: ...

    @abc.abstractmethod
    def provision_pin(self, transport_pin: bytearray, new_pin: bytearray, pairing_secret: bytearray) -> None:
        """First PIN change from the transport PIN; binds the token to the pairing secret."""

    @abc.abstractmethod
    def change_pin(self, old_pin: bytearray, new_pin: bytearray, pairing_secret: bytearray) -> None: ...

    @abc.abstractmethod
    def wrap(self, key: bytes, label: str) -> bytes:
        """Wrap a container key; the token must be unlocked."""

    @abc.abstractmethod
    def unwrap(self, blob: bytes, label: str) -> bytearray:
        """Unwrap; raises CorruptBlob when the blob is not ours or damaged."""

    @abc.abstractmethod
    def remove(self) -> None:
        """TOKEN_REMOVE: release the token (the soft token also deletes its file)."""

    def present(self) -> bool:
        """False once the hardware is gone (USB watchdog); software tokens are always present."""
        return True

    def close(self) -> None:
        """Release resources at scd shutdown without deleting anything."""
        self.lock()
