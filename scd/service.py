"""What scd does with each DaemonToToken (inventory §4.3); the transport is in `server.py`."""

from __future__ import annotations

import asyncio
import logging

from cml_common.messages.scd_pb2 import DaemonToToken, TokenToDaemon
from cml_common.paths import Layout

from .crypto_commands import CryptoCommands
from .errors import ScdError
from .identity import DeviceIdentity, IdentityError
from .token_commands import TokenCommands
from .tokenmgr import TokenManager

log = logging.getLogger(__name__)
T = TokenToDaemon
Q = DaemonToToken
MAX_SIGN_BUF = 64 * 1024  # checkpoint statements are ~250 bytes
TOKEN_CODES = {Q.TOKEN_ADD, Q.TOKEN_REMOVE, Q.LOCK, Q.UNLOCK, Q.CHANGE_PIN, Q.PROVISION_PIN, Q.WRAP_KEY, Q.UNWRAP_KEY}


class Scd:
    def __init__(self, layout: Layout, tokens: TokenManager, identity: DeviceIdentity | None) -> None:
        self.layout = layout
        self.tokens = TokenCommands(tokens)
        self.crypto = CryptoCommands(layout)
        self.identity = identity

    async def handle(self, req: DaemonToToken) -> TokenToDaemon:
        code = req.code
        if code in TOKEN_CODES:
            return await self.tokens.handle(req)
        if code in (Q.CRYPTO_HASH_BUF, Q.CRYPTO_HASH_FILE):
            return await self.crypto.hash(req)
        if code in (Q.CRYPTO_VERIFY_FILE, Q.CRYPTO_VERIFY_BUF):
            return await self.crypto.verify(req)
        if code == Q.PULL_DEVICE_CSR:
            return await self.pull_csr()
        if code == Q.PUSH_DEVICE_CERT:
            return await self.push_cert(req)
        if code == Q.CRYPTO_SIGN_DEVICE:
            return await self.sign_device(req)
        # DERIVE_KEY and TOKEN_QUERY_PAIR_STATE are unimplemented in the original too.
        log.warning("scd: %s is not implemented; answering CMD_UNKNOWN", Q.Code.Name(code))
        return T(code=T.CMD_UNKNOWN)

    def _provisioning_refusal(self, what: str, error_code: int) -> TokenToDaemon | None:
        """The reply when there is no identity to provision, or scd is not in provisioning mode."""
        if self.identity is None:
            log.warning("%s: no device identity (see the start-up log)", what)
            return T(code=error_code)  # type: ignore[arg-type]
        if not self.identity.provisioning:
            log.warning("%s refused: not in provisioning mode", what)
            return T(code=T.DEVICE_PROV_ERROR)
        return None

    async def pull_csr(self) -> TokenToDaemon:
        if (refusal := self._provisioning_refusal("PULL_DEVICE_CSR", T.DEVICE_CSR_ERROR)) is not None:
            return refusal
        assert self.identity is not None
        try:
            csr = await asyncio.to_thread(self.identity.csr)
        except OSError as e:
            log.warning("PULL_DEVICE_CSR: %s", e)
            return T(code=T.DEVICE_CSR_ERROR)
        return T(code=T.DEVICE_CSR, device_csr=csr)

    async def sign_device(self, req: DaemonToToken) -> TokenToDaemon:
        """Extension: the device key signs cmld's audit checkpoints; the reply carries the device
        certificate so a verifier can tell whose key it was."""
        if self.identity is None:
            log.warning("CRYPTO_SIGN_DEVICE: no device identity (see the start-up log)")
            return T(code=T.CRYPTO_SIGN_ERROR)
        if not req.HasField("sign_buf") or len(req.sign_buf) > MAX_SIGN_BUF:
            log.warning("CRYPTO_SIGN_DEVICE: no data, or more than %d bytes", MAX_SIGN_BUF)
            return T(code=T.CRYPTO_SIGN_ERROR)
        identity = self.identity
        try:
            sig = await asyncio.to_thread(identity.key.sign_data, req.sign_buf)
            cert = await asyncio.to_thread(identity.cert_path.read_bytes)
        except (ScdError, OSError) as e:
            log.warning("CRYPTO_SIGN_DEVICE: %s", e)
            return T(code=T.CRYPTO_SIGN_ERROR)
        return T(code=T.CRYPTO_SIGN_OK, signature=sig, signer_cert=cert)

    async def push_cert(self, req: DaemonToToken) -> TokenToDaemon:
        if (refusal := self._provisioning_refusal("PUSH_DEVICE_CERT", T.DEVICE_CERT_ERROR)) is not None:
            return refusal
        assert self.identity is not None
        try:
            await asyncio.to_thread(self.identity.install_certificate, req.device_cert)
        except (IdentityError, OSError) as e:
            log.warning("PUSH_DEVICE_CERT rejected: %s", e)
            return T(code=T.DEVICE_CERT_ERROR)
        log.info("PUSH_DEVICE_CERT: device certificate installed; used from the next start")
        return T(code=T.DEVICE_CERT_OK)
