"""TOKEN_ADD/REMOVE, UNLOCK/LOCK, PROVISION_PIN/CHANGE_PIN, WRAP_KEY/UNWRAP_KEY (inventory §4.3).

Reply codes follow the original exactly; failures are logged with the reason, PINs never are.
"""

from __future__ import annotations

import asyncio
import logging

from cml_common.messages.scd_pb2 import DaemonToToken, TokenToDaemon

from .secretbuf import secret, wipe
from .tokenmgr import Entry, TokenManager
from .tokens.base import AlreadyPaired, CorruptBlob, NotPaired, TokenError, TokenLocked, WrongPin

log = logging.getLogger(__name__)
T = TokenToDaemon
Q = DaemonToToken
MAX_KEY = 4096


def _name(req: DaemonToToken) -> str:
    return f"token {req.token_uuid} (type {req.token_type})"


class TokenCommands:
    def __init__(self, mgr: TokenManager) -> None:
        self.mgr = mgr

    async def handle(self, req: DaemonToToken) -> TokenToDaemon:
        code = req.code
        try:
            self.mgr.key(req)
        except TokenError as e:
            log.warning("%s: %s", Q.Code.Name(code), e)
            return T(code=FAILURE[code])
        if code == Q.TOKEN_ADD:
            return await self.add(req)
        entry = self.mgr.get(req)
        if entry is None:
            log.warning("%s: %s does not exist (no TOKEN_ADD)", Q.Code.Name(code), _name(req))
            return T(code=FAILURE[code])
        async with entry.lock:
            if code == Q.TOKEN_REMOVE:
                return await self.remove(req, entry)
            if code == Q.LOCK:
                entry.token.lock()
                return T(code=T.LOCK_SUCCESSFUL)
            if code == Q.UNLOCK:
                return await self.unlock(req, entry)
            if code in (Q.CHANGE_PIN, Q.PROVISION_PIN):
                return await self.pin_change(req, entry)
            if code == Q.WRAP_KEY:
                return await self.wrap(req, entry)
            return await self.unwrap(req, entry)

    async def add(self, req: DaemonToToken) -> TokenToDaemon:
        key = self.mgr.key(req)
        if key in self.mgr.entries:
            return T(code=T.TOKEN_ADD_SUCCESSFUL)
        try:
            token = self.mgr.create(req)
            await asyncio.to_thread(token.open)
        except (TokenError, OSError) as e:
            log.warning("TOKEN_ADD %s failed: %s", _name(req), e)
            return T(code=T.TOKEN_ADD_FAILED)
        if key in self.mgr.entries:  # a concurrent ADD won
            return T(code=T.TOKEN_ADD_SUCCESSFUL)
        self.mgr.entries[key] = Entry(token)
        log.info("TOKEN_ADD %s", _name(req))
        return T(code=T.TOKEN_ADD_SUCCESSFUL)

    async def remove(self, req: DaemonToToken, entry: Entry) -> TokenToDaemon:
        try:
            await asyncio.to_thread(entry.token.remove)
        except (TokenError, OSError) as e:
            log.warning("TOKEN_REMOVE %s failed: %s", _name(req), e)
            return T(code=T.TOKEN_REMOVE_FAILED)
        self.mgr.entries.pop(self.mgr.key(req), None)
        log.info("TOKEN_REMOVE %s", _name(req))
        return T(code=T.TOKEN_REMOVE_SUCCESSFUL)

    def _wrong(self, req: DaemonToToken, e: Exception) -> None:
        n = self.mgr.lockout.failed(self.mgr.key(req))
        log.warning("%s %s: %s (%d of %d wrong attempts)", Q.Code.Name(req.code), _name(req), e, n,
                    self.mgr.lockout.max_attempts)

    async def unlock(self, req: DaemonToToken, entry: Entry) -> TokenToDaemon:
        key = self.mgr.key(req)
        if self.mgr.lockout.locked(key):
            log.warning("UNLOCK %s refused: locked until scd restarts", _name(req))
            return T(code=T.LOCKED_TILL_REBOOT)
        if not req.HasField("token_pin"):
            log.warning("UNLOCK %s: no PIN given", _name(req))
            return T(code=T.UNLOCK_FAILED)
        with secret(req.token_pin) as pin, secret(req.pairing_secret) as ps:
            try:
                await asyncio.to_thread(entry.token.unlock, pin, ps)
            except WrongPin as e:
                self._wrong(req, e)
                return T(code=T.PASSWD_WRONG)
            except (NotPaired, TokenError, OSError) as e:
                log.warning("UNLOCK %s failed: %s", _name(req), e)
                return T(code=T.UNLOCK_FAILED)
        self.mgr.lockout.succeeded(key)
        return T(code=T.UNLOCK_SUCCESSFUL)

    async def pin_change(self, req: DaemonToToken, entry: Entry) -> TokenToDaemon:
        provision = req.code == Q.PROVISION_PIN
        ok, failed = ((T.PROVISION_PIN_SUCCESSFUL, T.PROVISION_PIN_FAILED) if provision
                      else (T.CHANGE_PIN_SUCCESSFUL, T.CHANGE_PIN_FAILED))
        key = self.mgr.key(req)
        if self.mgr.lockout.locked(key):
            log.warning("%s %s refused: locked until scd restarts", Q.Code.Name(req.code), _name(req))
            return T(code=T.LOCKED_TILL_REBOOT)
        if not req.HasField("token_pin"):
            return T(code=T.CHANGE_PIN_FAILED)  # the original answers so for both commands
        if not req.token_newpin or not req.pairing_secret:
            log.warning("%s %s: new PIN and pairing secret are required", Q.Code.Name(req.code), _name(req))
            return T(code=failed)
        op = entry.token.provision_pin if provision else entry.token.change_pin
        with secret(req.token_pin) as old, secret(req.token_newpin) as new, secret(req.pairing_secret) as ps:
            try:
                await asyncio.to_thread(op, old, new, ps)
            except WrongPin as e:
                self._wrong(req, e)
                return T(code=failed)
            except (AlreadyPaired, TokenError, OSError) as e:
                log.warning("%s %s failed: %s", Q.Code.Name(req.code), _name(req), e)
                return T(code=failed)
        self.mgr.lockout.succeeded(key)
        log.info("%s %s done", Q.Code.Name(req.code), _name(req))
        return T(code=ok)

    async def wrap(self, req: DaemonToToken, entry: Entry) -> TokenToDaemon:
        if not req.unwrapped_key or len(req.unwrapped_key) > MAX_KEY:
            log.warning("WRAP_KEY %s: key missing or larger than %d bytes", _name(req), MAX_KEY)
            return T(code=T.WRAPPED_KEY)
        try:
            blob = await asyncio.to_thread(entry.token.wrap, req.unwrapped_key, req.container_uuid)
        except TokenLocked as e:
            log.warning("WRAP_KEY %s: %s", _name(req), e)
            return T(code=T.WRAPPED_KEY)
        except (TokenError, OSError) as e:
            log.warning("WRAP_KEY %s failed: %s", _name(req), e)
            return T(code=T.WRAPPED_KEY)
        return T(code=T.WRAPPED_KEY, wrapped_key=blob)

    async def unwrap(self, req: DaemonToToken, entry: Entry) -> TokenToDaemon:
        if not req.wrapped_key:
            log.warning("UNWRAP_KEY %s: no wrapped key given", _name(req))
            return T(code=T.UNWRAPPED_KEY)
        try:
            key = await asyncio.to_thread(entry.token.unwrap, req.wrapped_key, req.container_uuid)
        except CorruptBlob as e:
            log.warning("UNWRAP_KEY %s: %s", _name(req), e)
            return T(code=T.UNWRAPPED_KEY, unwrapped_key=b"")  # the original's "corrupt key file"
        except (TokenError, OSError) as e:
            log.warning("UNWRAP_KEY %s failed: %s", _name(req), e)
            return T(code=T.UNWRAPPED_KEY)
        try:
            return T(code=T.UNWRAPPED_KEY, unwrapped_key=bytes(key))
        finally:
            wipe(key)


FAILURE: dict[int, TokenToDaemon.Code] = {
    Q.TOKEN_ADD: T.TOKEN_ADD_FAILED, Q.TOKEN_REMOVE: T.TOKEN_REMOVE_FAILED, Q.LOCK: T.LOCK_FAILED,
    Q.UNLOCK: T.UNLOCK_FAILED, Q.CHANGE_PIN: T.CHANGE_PIN_FAILED, Q.PROVISION_PIN: T.PROVISION_PIN_FAILED,
    Q.WRAP_KEY: T.WRAPPED_KEY, Q.UNWRAP_KEY: T.UNWRAPPED_KEY,
}
