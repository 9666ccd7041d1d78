"""Async client of scd's control socket (SOCK_SEQPACKET, DaemonToToken -> TokenToDaemon).

One connection per request, as the original cmld does for crypto requests: requests never queue
behind each other and a broken connection affects one call. Every failure raises a typed
`ScdError`; no helper ever reports success for a reply that is not the success code.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import socket
from collections.abc import AsyncIterator
from pathlib import Path

from cml_common import aioframing, framing, paths
from cml_common.messages.scd_pb2 import DaemonToToken, HashAlgo, TokenToDaemon, TokenType
from cmld.errors import ScdClientError

Q = DaemonToToken
T = TokenToDaemon
PAIRED_MARKER = "token_is_paired"


class ScdError(ScdClientError):
    """Base of every client error."""


class ScdUnavailable(ScdError):
    """scd's socket cannot be reached."""


class ScdTimeout(ScdError):
    pass


class ScdProtocolError(ScdError):
    """The connection broke or the reply was not a valid TokenToDaemon."""


class ScdCommandFailed(ScdError):
    def __init__(self, request: int, code: int, detail: str = "") -> None:
        self.request = request
        self.code = code
        super().__init__(f"scd {Q.Code.Name(request)}: {T.Code.Name(code)}{': ' + detail if detail else ''}")


class PinRejected(ScdCommandFailed):
    """scd answered PASSWD_WRONG (the token's PIN is not the one given)."""


class LockedTillReboot(ScdCommandFailed):
    pass


class TokenUnpaired(ScdError):
    """The container's token has not been paired (no successful first change_pin)."""


class CorruptKeyFile(ScdError):
    """scd could not unwrap the stored key: truncated, altered or made by another token."""


class NotProvisioning(ScdCommandFailed):
    """PULL_DEVICE_CSR/PUSH_DEVICE_CERT outside provisioning mode."""


class VerifyResult(enum.IntEnum):
    GOOD = T.CRYPTO_VERIFY_GOOD
    ERROR = T.CRYPTO_VERIFY_ERROR
    BAD_SIGNATURE = T.CRYPTO_VERIFY_BAD_SIGNATURE
    BAD_CERTIFICATE = T.CRYPTO_VERIFY_BAD_CERTIFICATE
    LOCALLY_SIGNED = T.CRYPTO_VERIFY_LOCALLY_SIGNED


class ScdClient:
    def __init__(self, path: Path = paths.SCD_SOCKET, timeout: float = 30.0) -> None:
        self.path = path
        self.timeout = timeout

    # ------------------------------------------------------------ transport

    async def _connect(self) -> socket.socket:
        s = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET | socket.SOCK_CLOEXEC)
        s.setblocking(False)
        try:
            await asyncio.get_running_loop().sock_connect(s, str(self.path))
        except OSError as e:
            s.close()
            raise ScdUnavailable(f"cannot connect to scd at {self.path}: {e.strerror or e}") from e
        return s

    async def _exchange(self, s: socket.socket, req: DaemonToToken) -> TokenToDaemon:
        loop = asyncio.get_running_loop()
        await aioframing.async_send_seqpacket(loop, s, framing.serialize(req))
        body = await aioframing.async_recv_seqpacket(loop, s)
        if body is None:
            raise ScdProtocolError(f"scd closed the connection without answering {Q.Code.Name(req.code)}")
        return framing.parse(TokenToDaemon, body)

    async def request(self, req: DaemonToToken, timeout: float | None = None) -> TokenToDaemon:
        """Send one request and return scd's reply, whatever its code."""
        s = await self._connect()
        try:
            async with asyncio.timeout(timeout or self.timeout):
                return await self._exchange(s, req)
        except TimeoutError as e:
            raise ScdTimeout(f"scd did not answer {Q.Code.Name(req.code)} within {timeout or self.timeout:g} s") from e
        except (framing.FramingError, framing.MessageError, OSError) as e:
            raise ScdProtocolError(f"scd {Q.Code.Name(req.code)}: {e}") from e
        finally:
            s.close()

    async def _expect(self, req: DaemonToToken, ok: int) -> TokenToDaemon:
        r = await self.request(req)
        if r.code == ok:
            return r
        if r.code == T.PASSWD_WRONG:
            raise PinRejected(req.code, r.code)
        if r.code == T.LOCKED_TILL_REBOOT:
            raise LockedTillReboot(req.code, r.code, "three wrong PINs; restart scd or reboot")
        if r.code == T.DEVICE_PROV_ERROR:
            raise NotProvisioning(req.code, r.code, "device is not in provisioning mode")
        raise ScdCommandFailed(req.code, r.code)

    # ------------------------------------------------------------ tokens

    async def token_add(self, token_uuid: str, token_type: int = TokenType.SOFT, serial: str | None = None) -> None:
        req = Q(code=Q.TOKEN_ADD, token_uuid=token_uuid, token_type=token_type)  # type: ignore[arg-type]
        if serial is not None:
            req.usbtoken_serial = serial
        await self._expect(req, T.TOKEN_ADD_SUCCESSFUL)

    async def token_remove(self, token_uuid: str, token_type: int = TokenType.SOFT) -> None:
        await self._expect(Q(code=Q.TOKEN_REMOVE, token_uuid=token_uuid, token_type=token_type),  # type: ignore[arg-type]
                           T.TOKEN_REMOVE_SUCCESSFUL)

    async def unlock(self, token_uuid: str, pin: str, pairing_secret: bytes,
                     token_type: int = TokenType.SOFT) -> None:
        await self._expect(Q(code=Q.UNLOCK, token_uuid=token_uuid, token_type=token_type,  # type: ignore[arg-type]
                             token_pin=pin, pairing_secret=pairing_secret), T.UNLOCK_SUCCESSFUL)

    async def lock(self, token_uuid: str, token_type: int = TokenType.SOFT) -> None:
        await self._expect(Q(code=Q.LOCK, token_uuid=token_uuid, token_type=token_type),  # type: ignore[arg-type]
                           T.LOCK_SUCCESSFUL)

    async def change_pin(self, token_uuid: str, old_pin: str, new_pin: str, pairing_secret: bytes,
                         token_type: int = TokenType.SOFT, provision: bool = False) -> None:
        code, ok = ((Q.PROVISION_PIN, T.PROVISION_PIN_SUCCESSFUL) if provision
                    else (Q.CHANGE_PIN, T.CHANGE_PIN_SUCCESSFUL))
        await self._expect(Q(code=code, token_uuid=token_uuid, token_type=token_type,  # type: ignore[arg-type]
                             token_pin=old_pin, token_newpin=new_pin, pairing_secret=pairing_secret), ok)

    async def pair_or_change_pin(self, container_dir: Path, token_uuid: str, old_pin: str, new_pin: str,
                                 pairing_secret: bytes, token_type: int = TokenType.SOFT) -> bool:
        """cmld's change_pin: PROVISION_PIN (pairing) the first time, CHANGE_PIN afterwards; the
        `token_is_paired` marker is created after a successful pairing. Returns True if it paired."""
        marker = container_dir / PAIRED_MARKER
        pairing = not marker.exists()
        await self.change_pin(token_uuid, old_pin, new_pin, pairing_secret, token_type, provision=pairing)
        if pairing:
            container_dir.mkdir(parents=True, exist_ok=True)
            marker.touch()
        return pairing

    @staticmethod
    def check_paired(container_dir: Path) -> None:
        """Raise TokenUnpaired before a start when the token was never paired (J3)."""
        if not (container_dir / PAIRED_MARKER).exists():
            raise TokenUnpaired(f"token of {container_dir.name} is not paired: run change_pin first")

    async def _key_op(self, code: int, reply: int, field: str, token_uuid: str, token_type: int,
                      container_uuid: str | None, key_field: str, key: bytes) -> TokenToDaemon:
        req = Q(code=code, token_uuid=token_uuid, token_type=token_type,  # type: ignore[arg-type]
                container_uuid=container_uuid or token_uuid)
        setattr(req, key_field, key)
        r = await self.request(req)
        if r.code != reply or not r.HasField(field):
            raise ScdCommandFailed(code, r.code, "token locked, missing or failing (see scd log)")
        return r

    async def wrap_key(self, token_uuid: str, key: bytes, token_type: int = TokenType.SOFT,
                       container_uuid: str | None = None) -> bytes:
        r = await self._key_op(Q.WRAP_KEY, T.WRAPPED_KEY, "wrapped_key", token_uuid, token_type, container_uuid,
                               "unwrapped_key", key)
        return r.wrapped_key

    async def unwrap_key(self, token_uuid: str, wrapped: bytes, token_type: int = TokenType.SOFT,
                         container_uuid: str | None = None) -> bytes:
        r = await self._key_op(Q.UNWRAP_KEY, T.UNWRAPPED_KEY, "unwrapped_key", token_uuid, token_type,
                               container_uuid, "wrapped_key", wrapped)
        if not r.unwrapped_key:
            raise CorruptKeyFile(f"the wrapped key of {token_uuid} does not unwrap (corrupt key file)")
        return r.unwrapped_key

    # ------------------------------------------------------------ hashing and verification

    async def hash_buf(self, data: bytes, algo: int = HashAlgo.SHA256) -> bytes:
        r = await self._expect(Q(code=Q.CRYPTO_HASH_BUF, hash_algo=algo, hash_buf=data),  # type: ignore[arg-type]
                               T.CRYPTO_HASH_OK)
        return r.hash_value

    async def hash_file(self, path: Path, algo: int = HashAlgo.SHA256) -> bytes:
        r = await self._expect(Q(code=Q.CRYPTO_HASH_FILE, hash_algo=algo, hash_file=str(path)),  # type: ignore[arg-type]
                               T.CRYPTO_HASH_OK)
        return r.hash_value

    async def verify_file(self, data: Path, sig: Path, cert: Path, ignore_time: bool = False) -> VerifyResult:
        r = await self.request(Q(code=Q.CRYPTO_VERIFY_FILE, hash_algo=HashAlgo.SHA512, verify_data_file=str(data),
                                 verify_sig_file=str(sig), verify_cert_file=str(cert), verify_ignore_time=ignore_time))
        return self._verify_result(r)

    async def verify_buf(self, data: bytes, sig: bytes, cert: bytes, ignore_time: bool = False) -> VerifyResult:
        r = await self.request(Q(code=Q.CRYPTO_VERIFY_BUF, hash_algo=HashAlgo.SHA512, verify_data_buf=data,
                                 verify_sig_buf=sig, verify_cert_buf=cert, verify_ignore_time=ignore_time))
        return self._verify_result(r)

    @staticmethod
    def _verify_result(r: TokenToDaemon) -> VerifyResult:
        try:
            return VerifyResult(r.code)
        except ValueError as e:
            raise ScdCommandFailed(Q.CRYPTO_VERIFY_FILE, r.code) from e

    # ------------------------------------------------------------ device identity and trust

    async def sign_device(self, data: bytes) -> tuple[bytes, bytes]:
        """(signature, device certificate PEM): the device key signs `data` (extension)."""
        r = await self._expect(DaemonToToken(code=DaemonToToken.CRYPTO_SIGN_DEVICE, sign_buf=data),
                               TokenToDaemon.CRYPTO_SIGN_OK)
        return r.signature, r.signer_cert

    async def pull_device_csr(self) -> bytes:
        return (await self._expect(Q(code=Q.PULL_DEVICE_CSR), T.DEVICE_CSR)).device_csr

    async def push_device_cert(self, pem: bytes) -> None:
        await self._expect(Q(code=Q.PUSH_DEVICE_CERT, device_cert=pem), T.DEVICE_CERT_OK)

    # ------------------------------------------------------------ events

    @contextlib.asynccontextmanager
    async def events(self) -> AsyncIterator[asyncio.Queue[TokenToDaemon | None]]:
        """Register as scd's event listener; events (TOKEN_SE_REMOVED) arrive on the queue, and
        None once scd closed the connection (it exited: register again when it is back)."""
        s = await self._connect()
        queue: asyncio.Queue[TokenToDaemon | None] = asyncio.Queue()
        try:
            async with asyncio.timeout(self.timeout):
                r = await self._exchange(s, Q(code=Q.REGISTER_EVENT_LISTENER))
            if r.code != T.REGISTER_EVENT_LISTENER_OK:
                raise ScdCommandFailed(Q.REGISTER_EVENT_LISTENER, r.code, "another listener is registered")

            async def pump() -> None:
                loop = asyncio.get_running_loop()
                try:
                    while (body := await aioframing.async_recv_seqpacket(loop, s)) is not None:
                        await queue.put(framing.parse(TokenToDaemon, body))
                finally:
                    queue.put_nowait(None)

            task = asyncio.create_task(pump())
            try:
                yield queue
            finally:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task
        finally:
            s.close()
