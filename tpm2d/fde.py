"""The disk-encryption (FDE) key in TPM NV, bound to PCR 7 (inventory §5.2 DMCRYPT_*, user docs §1.5).

Layout kept from the original so a device keeps its key across the switch to this tpm2d:
- NV index 0x01000000 in the owner hierarchy, 64 bytes, attributes OWNERWRITE | OWNERREAD |
  AUTHWRITE | POLICYREAD | READ_STCLEAR, write auth = the `password` of the first DMCRYPT_SETUP;
- read policy: TPM2_PolicyPCR over PCR 7 (SHA-256) with PCR 7's value when the index is created,
  so the key is released only in the same secure-boot state.

The key is read through a salted policy session with response encryption, truncated to the key
type's length (32/48/64 bytes) and handed to device-mapper as an `aes-xts-plain64` target
(cryptfs ENCRYPT_ONLY), named after the device's basename. The table goes to `dmsetup` on stdin,
never on a command line. A machine without device-mapper (our build hosts) still exercises every
TPM step; only the mapping fails there, with FDE_NO_DEVICE and the reason.

As in the original the read needs no password (the policy has no PolicyAuthValue); DMCRYPT_LOCK
uses the same PCR-7 authorization (ReadLock is a read-class command), DMCRYPT_RESET needs the
owner password.
"""

from __future__ import annotations

import logging
import os
import subprocess
from dataclasses import dataclass
from pathlib import Path

from tpm2_pytss import TSS2_Exception
from tpm2_pytss.constants import ESYS_TR, TPM2_ALG, TPM2_RC, TPMA_NV
from tpm2_pytss.types import TPM2B_NV_PUBLIC, TPMS_NV_PUBLIC

from cml_common.messages.tpm2d_pb2 import ControllerToTpm, TpmToController

from .tpm import Tpm, TpmError, auth_value, pcr_policy_digest, pcr_selection, rc_is

log = logging.getLogger(__name__)

FDE_NV_INDEX = 0x01000000
FDE_KEY_LEN = 64
FDE_PCRS = [7]
KEY_LENGTHS: dict[int, int] = {ControllerToTpm.XTS_AES128: 32, ControllerToTpm.XTS_AES192: 48,
                               ControllerToTpm.XTS_AES256: 64}
NV_ATTRS = (TPMA_NV.OWNERWRITE | TPMA_NV.OWNERREAD | TPMA_NV.AUTHWRITE | TPMA_NV.POLICYREAD
            | TPMA_NV.READ_STCLEAR)
R = TpmToController


@dataclass
class FdeResult:
    state: int  # TpmToController.FdeResponse
    message: str = ""


class Fde:
    def __init__(self, tpm: Tpm) -> None:
        self.tpm = tpm
        self.state: int = R.FDE_RESET  # the original's initial fde_state

    # --- TPM part ---------------------------------------------------------------------------

    def _index(self) -> ESYS_TR | None:
        try:
            return self.tpm.esys.tr_from_tpmpublic(FDE_NV_INDEX)
        except TSS2_Exception:
            return None

    def policy_digest(self) -> bytes:
        pcr7 = self.tpm.pcr_read(FDE_PCRS)[7]
        return pcr_policy_digest([pcr7], FDE_PCRS)

    def _read(self, index: ESYS_TR) -> bytes:
        with self.tpm.policy_session() as sess:
            try:
                self.tpm.esys.policy_pcr(sess, b"", pcr_selection(FDE_PCRS))
                with self.tpm.hmac_session(encrypt=True, decrypt=False) as enc:
                    return bytes(self.tpm.esys.nv_read(index, FDE_KEY_LEN, 0, auth_handle=index, session1=sess,
                                                       session2=enc))
            except TSS2_Exception as e:
                raise TpmError.wrap(f"reading the FDE key from NV {FDE_NV_INDEX:#x}", e) from e

    def _create(self, password: str) -> bytes:
        auth = auth_value(password, "the password")
        key = self.tpm.get_random(FDE_KEY_LEN)
        pub = TPM2B_NV_PUBLIC(nvPublic=TPMS_NV_PUBLIC(
            nvIndex=FDE_NV_INDEX, nameAlg=TPM2_ALG.SHA256, attributes=NV_ATTRS,
            authPolicy=self.policy_digest(), dataSize=FDE_KEY_LEN))
        try:
            with self.tpm.hmac_session(encrypt=False, decrypt=True) as s:
                index = self.tpm.esys.nv_define_space(auth, pub, ESYS_TR.OWNER, session1=s)
            self.tpm.esys.tr_set_auth(index, auth)
            with self.tpm.hmac_session(encrypt=False, decrypt=True) as s:
                self.tpm.esys.nv_write(index, key, 0, auth_handle=index, session1=s)
        except TSS2_Exception as e:
            raise TpmError.wrap(f"creating the FDE key in NV {FDE_NV_INDEX:#x}", e) from e
        if self._read(index) != key:
            raise TpmError("the FDE key read back from NV differs from the key written")
        log.info("created a new %d-byte FDE key in NV %#x under a PCR-7 policy", FDE_KEY_LEN, FDE_NV_INDEX)
        return key

    def load_key(self, password: str) -> tuple[bytes | None, FdeResult]:
        """The 64-byte key (created on first use), or None and the FDE state saying why."""
        index = self._index()
        if index is not None:
            try:
                key = self._read(index)
            except TpmError as e:
                if rc_is(e, TPM2_RC.AUTH_FAIL, TPM2_RC.POLICY_FAIL, TPM2_RC.BAD_AUTH, TPM2_RC.VALUE):
                    self.state = R.FDE_AUTH_FAILED
                    return None, FdeResult(self.state, f"{e} (PCR 7 differs from when the key was made)")
                if rc_is(e, TPM2_RC.NV_LOCKED):
                    self.state = R.FDE_KEY_ACCESS_LOCKED
                    return None, FdeResult(self.state, f"{e} (locked until the next TPM reset)")
                self.state = R.FDE_UNEXPECTED_ERROR
                return None, FdeResult(self.state, str(e))
            self.state = R.FDE_OK
            return key, FdeResult(self.state)
        log.info("NV index %#x not defined: creating a new FDE key", FDE_NV_INDEX)
        try:
            key = self._create(password)
        except TpmError as e:
            self.state = R.FDE_KEYGEN_FAILED
            return None, FdeResult(self.state, str(e))
        self.state = R.FDE_OK
        return key, FdeResult(self.state)

    def lock(self) -> FdeResult:
        index = self._index()
        if index is None:
            return FdeResult(self.state, f"NV index {FDE_NV_INDEX:#x} is not defined")
        with self.tpm.policy_session() as sess:
            try:
                self.tpm.esys.policy_pcr(sess, b"", pcr_selection(FDE_PCRS))
                self.tpm.esys.nv_read_lock(index, auth_handle=index, session1=sess)
            except TSS2_Exception as e:
                return FdeResult(self.state, f"TPM2_NV_ReadLock: {e}")
        self.state = R.FDE_KEY_ACCESS_LOCKED
        return FdeResult(self.state)

    def reset(self, owner_password: str) -> FdeResult:
        index = self._index()
        if index is None:
            return FdeResult(self.state, f"NV index {FDE_NV_INDEX:#x} is not defined")
        try:
            owner = auth_value(owner_password, "the owner password")
        except TpmError as e:
            return FdeResult(self.state, str(e))
        try:
            self.tpm.esys.tr_set_auth(ESYS_TR.OWNER, owner)
            with self.tpm.hmac_session(encrypt=False, decrypt=False) as s:
                self.tpm.esys.nv_undefine_space(index, ESYS_TR.OWNER, session1=s)
        except TSS2_Exception as e:
            return FdeResult(self.state, f"TPM2_NV_UndefineSpace: {e}")
        finally:
            self.tpm.esys.tr_set_auth(ESYS_TR.OWNER, b"")
        self.state = R.FDE_RESET
        return FdeResult(self.state)

    # --- the whole DMCRYPT_SETUP --------------------------------------------------------------

    def setup(self, device: str, password: str, key_type: int) -> FdeResult:
        if not device or not os.path.exists(device):
            return FdeResult(R.FDE_NO_DEVICE, f"device {device!r} does not exist")
        key, result = self.load_key(password)
        if key is None:
            return result
        length = KEY_LENGTHS.get(key_type, FDE_KEY_LEN)
        try:
            map_device(Path(device), key[:length])
        except MappingError as e:
            self.state = R.FDE_NO_DEVICE
            return FdeResult(self.state, f"FDE key ready in NV {FDE_NV_INDEX:#x}; mapping failed: {e}")
        return FdeResult(R.FDE_OK)


class MappingError(Exception):
    pass


def map_device(device: Path, key: bytes) -> Path:
    """dm-crypt aes-xts-plain64 over `device` as /dev/mapper/<basename> (cryptfs ENCRYPT_ONLY)."""
    name = device.name
    if not name or name in (".", "..") or "/" in name:
        raise MappingError(f"cannot derive a mapping name from {device}")
    target = Path("/dev/mapper") / name
    if target.exists():
        raise MappingError(f"{target} already exists")
    try:
        sectors = subprocess.run(["blockdev", "--getsz", str(device)], capture_output=True, text=True,
                                 timeout=30, check=False)
    except OSError as e:
        raise MappingError(f"blockdev: {e}") from e
    if sectors.returncode != 0:
        raise MappingError(f"{device} is not a block device: {sectors.stderr.strip()}")
    table = f"0 {int(sectors.stdout.strip())} crypt aes-xts-plain64 {key.hex()} 0 {device} 0\n"
    try:
        r = subprocess.run(["dmsetup", "create", name], input=table, capture_output=True, text=True,
                           timeout=60, check=False)
    except OSError as e:
        raise MappingError(f"dmsetup: {e}") from e
    if r.returncode != 0:
        raise MappingError(f"dmsetup create {name}: {r.stderr.strip() or r.stdout.strip()}")
    log.info("mapped %s to %s (aes-xts-plain64, %d-bit key)", device, target, len(key) * 8)
    return target
