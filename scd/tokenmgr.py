"""Tokens in memory, keyed by (token type, token UUID = container UUID), created by TOKEN_ADD.

Each token has an asyncio lock: its operations run one at a time in a worker thread, so the
event loop keeps serving other clients while a PKCS#12 file is re-encrypted or a card answers.
"""

from __future__ import annotations

import asyncio
import uuid as uuidlib
from collections.abc import Callable
from dataclasses import dataclass, field

from cml_common.messages.scd_pb2 import DaemonToToken

from .lockout import Lockout
from .tokens.base import Token, TokenError

Key = tuple[int, str]
Factory = Callable[[DaemonToToken, str], Token]


def canonical_uuid(value: str) -> str:
    """Token UUIDs name files: only a canonical UUID string is accepted (no path tricks)."""
    try:
        u = uuidlib.UUID(value)
    except ValueError as e:
        raise TokenError(f"token UUID {value!r} is not a UUID") from e
    if str(u) != value.lower():
        raise TokenError(f"token UUID {value!r} is not in canonical form")
    return str(u)


@dataclass
class Entry:
    token: Token
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)


class TokenManager:
    def __init__(self, factories: dict[int, Factory]) -> None:
        self.factories = factories
        self.entries: dict[Key, Entry] = {}
        self.lockout = Lockout()

    @staticmethod
    def key(req: DaemonToToken) -> Key:
        return (req.token_type, canonical_uuid(req.token_uuid))

    def get(self, req: DaemonToToken) -> Entry | None:
        return self.entries.get(self.key(req))

    def create(self, req: DaemonToToken) -> Token:
        key = self.key(req)
        factory = self.factories.get(req.token_type)
        if factory is None:
            raise TokenError(f"token type {req.token_type} is not supported by this scd")
        return factory(req, key[1])

    def close_all(self) -> None:
        for e in self.entries.values():
            e.token.close()
        self.entries.clear()
