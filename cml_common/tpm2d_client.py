"""A small blocking client of tpm2d's control socket, for cmld, scd and the CLI.

It imports no TPM library (only the generated messages and the framing), so cmld and scd can use
it on machines without tpm2-pytss. From asyncio code, call it in a thread
(`await asyncio.to_thread(client.ml_append, path, digest)`); one client object is one
connection, reopened once if tpm2d restarted in between.

    from cml_common.tpm2d_client import Tpm2dClient
    with Tpm2dClient() as tpm:                       # /run/socket/cml-tpm2d-control
        tpm.ml_append("/var/lib/cml/operatingsystems/x-1/root.img", sha256_bytes)
        tpm.random(16)                               # 16 bytes from the TPM

Every call returns the reply's data or raises `Tpm2dError` with tpm2d's `error_message` (or
`Tpm2dUnavailable` when tpm2d cannot be reached). The protocol is `proto/tpm2d.proto`.
"""

from __future__ import annotations

import socket
from pathlib import Path
from types import TracebackType

from cml_common import framing, paths
from cml_common.messages.attestation_pb2 import SHA256, MlContainerEntry
from cml_common.messages.tpm2d_pb2 import ControllerToTpm, TpmToController

C = ControllerToTpm
R = TpmToController


class Tpm2dError(Exception):
    """tpm2d answered that the command failed; `reply` is the whole answer."""

    def __init__(self, message: str, reply: TpmToController | None = None) -> None:
        super().__init__(message)
        self.reply = reply


class Tpm2dUnavailable(Tpm2dError):
    """tpm2d's socket does not answer."""


class Tpm2dClient:
    def __init__(self, socket_path: Path = paths.TPM2D_SOCKET, timeout: float = 60.0) -> None:
        self.socket_path = Path(socket_path)
        self.timeout = timeout
        self._sock: socket.socket | None = None

    def __enter__(self) -> Tpm2dClient:
        return self

    def __exit__(self, t: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None) -> None:
        self.close()

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None

    def _connect(self) -> socket.socket:
        if self._sock is None:
            s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            s.settimeout(self.timeout)
            try:
                s.connect(str(self.socket_path))
            except OSError as e:
                s.close()
                raise Tpm2dUnavailable(f"tpm2d at {self.socket_path} does not answer: {e}") from e
            self._sock = s
        return self._sock

    def send(self, req: ControllerToTpm, *, expect_reply: bool = True) -> TpmToController | None:
        """One request, one reply (none for EXIT). Retries once on a connection tpm2d closed."""
        body = framing.serialize(req)
        for attempt in (0, 1):
            sock = self._connect()
            try:
                framing.send_frame(sock, body)
                if not expect_reply:
                    return None
                raw = framing.recv_frame(sock)
            except (OSError, framing.FramingError) as e:
                self.close()
                if attempt:
                    raise Tpm2dUnavailable(f"tpm2d at {self.socket_path}: {e}") from e
                continue
            if raw is None:
                self.close()
                if attempt:
                    raise Tpm2dUnavailable(f"tpm2d at {self.socket_path} closed the connection")
                continue
            try:
                return framing.parse(R, raw)
            except framing.MessageError as e:
                raise Tpm2dError(f"tpm2d sent a reply that does not parse: {e}") from e
        raise Tpm2dUnavailable("unreachable")  # pragma: no cover

    def _ok(self, req: ControllerToTpm) -> TpmToController:
        reply = self.send(req)
        assert reply is not None
        if reply.code == R.GENERIC_RESPONSE and reply.response != R.CMD_OK:
            raise Tpm2dError(reply.error_message or f"{C.Code.Name(req.code)} failed", reply)
        return reply

    # --- the calls cmld needs -----------------------------------------------------------------

    def ml_append(self, filename: str, sha256: bytes) -> None:
        """Measure a GuestOS image into PCR 11 (before the container that uses it starts)."""
        self._ok(C(code=C.ML_APPEND, ml_filename=filename, ml_datahash=sha256, ml_hashalg=SHA256))

    def ml_list(self) -> list[MlContainerEntry]:
        return list(self._ok(C(code=C.ML_LIST)).ml_container_entry)

    def random(self, size: int) -> bytes:
        reply = self._ok(C(code=C.RANDOM_REQ, rand_size=size))
        return bytes.fromhex(reply.rand_data)

    def clear(self, lockout_password: str = "") -> None:
        self._ok(C(code=C.CLEAR, password=lockout_password))

    def change_owner_password(self, old: str, new: str) -> None:
        self._ok(C(code=C.CHANGE_OWNER_PWD, password=old, password_new=new))

    # --- sealing (ours) -----------------------------------------------------------------------

    def seal_create(self, name: str, authority_pem: bytes, signed_policy: bytes = b"") -> str:
        """Seal a fresh TPM-random secret; returns the recovery key, which tpm2d does not keep."""
        return self._ok(C(code=C.SEAL_CREATE, seal_name=name, seal_authority=authority_pem,
                          seal_policy=signed_policy)).recovery_key

    def seal_policy_update(self, name: str, signed_policy: bytes) -> None:
        self._ok(C(code=C.SEAL_POLICY_UPDATE, seal_name=name, seal_policy=signed_policy))

    def unseal(self, name: str) -> bytes:
        return bytes(self._ok(C(code=C.UNSEAL, seal_name=name)).secret)

    def unseal_recovery(self, name: str, recovery_key: str) -> bytes:
        return bytes(self._ok(C(code=C.UNSEAL_RECOVERY, seal_name=name, password=recovery_key)).secret)

    # --- the TPM device key (for scd) ---------------------------------------------------------

    def device_key_public(self) -> bytes:
        return bytes(self._ok(C(code=C.DEVICE_KEY_PUBLIC)).public_key)

    def device_key_sign(self, data: bytes) -> bytes:
        """RSASSA-PKCS1-v1_5 / SHA-256 signature over `data` by the TPM device key."""
        return bytes(self._ok(C(code=C.DEVICE_KEY_SIGN, sign_data=data)).signature)
