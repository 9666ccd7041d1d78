"""The TPM through tpm2-pytss (ESAPI): one context for the daemon's life, used from one thread.

tpm2d's asyncio loop hands every TPM operation to a single worker thread (`TpmWorker` in
`service.py`), so ESAPI (which is not thread-safe) is only ever touched by that thread, TPM
commands are serialized as the TPM needs, and a slow TPM never stalls the sockets.

What the original does at start (inventory §5.1) happens in `Tpm.open`: TPM self-test, then a
salt key (an RSA primary in the NULL hierarchy) whose handle salts the HMAC sessions that carry
secrets (NV reads and writes, random bytes, unsealed data), so they are encrypted on the bus.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Iterator
from contextlib import contextmanager

from tpm2_pytss import ESAPI, TSS2_Exception
from tpm2_pytss.constants import ESYS_TR, TPM2_ALG, TPM2_CAP, TPM2_HT, TPM2_SE, TPMA_SESSION
from tpm2_pytss.types import (
    TPM2B_PUBLIC,
    TPM2B_SENSITIVE_CREATE,
    TPML_DIGEST_VALUES,
    TPML_PCR_SELECTION,
    TPMS_PCR_SELECTION,
    TPMT_HA,
    TPMT_SIG_SCHEME,
    TPMT_SYM_DEF,
)

log = logging.getLogger(__name__)

SHA256_SIZE = 32
MAX_PCR = 24


class TpmError(Exception):
    """A TPM command failed; `rc` is the TPM/TSS response code (None if not from the TPM)."""

    def __init__(self, what: str, rc: int | None = None) -> None:
        super().__init__(what)
        self.rc = rc

    @classmethod
    def wrap(cls, what: str, e: TSS2_Exception) -> TpmError:
        return cls(f"{what}: {e}", int(e.rc))

    def base_rc(self) -> int | None:
        """The format-1/format-0 error code without handle/parameter/session numbers."""
        if self.rc is None:
            return None
        rc = self.rc & 0xFFFF
        return rc & 0xBF if rc & 0x80 else rc


MAX_AUTH = 64  # TPM2B_AUTH holds at most sizeof(TPMU_HA) bytes


def auth_value(password: str, what: str) -> bytes:
    """A password as a TPM authValue; TpmError when it is longer than a TPM2B_AUTH holds (the
    TSS would raise IndexError, an internal error: found by fuzzing tpm2d's CLEAR)."""
    value = password.encode()
    if len(value) > MAX_AUTH:
        raise TpmError(f"{what} is {len(value)} bytes; a TPM authValue holds at most {MAX_AUTH}")
    return value


def rc_is(err: TpmError, *codes: int) -> bool:
    base = err.base_rc()
    return base is not None and any(base == (c & 0xBF if c & 0x80 else c) for c in codes)


def pcr_selection(pcrs: list[int]) -> TPML_PCR_SELECTION:
    """A SHA-256 selection of `pcrs` (each 0..23)."""
    bitmap = bytearray(3)
    for p in pcrs:
        if not 0 <= p < MAX_PCR:
            raise TpmError(f"PCR {p} out of range 0..{MAX_PCR - 1}")
        bitmap[p // 8] |= 1 << (p % 8)
    sel = TPMS_PCR_SELECTION(hash=TPM2_ALG.SHA256, sizeofSelect=3, pcrSelect=bytes(bitmap))
    return TPML_PCR_SELECTION([sel])


def pcr_policy_digest(values: list[bytes], pcrs: list[int], start: bytes = bytes(SHA256_SIZE)) -> bytes:
    """TPM2_PolicyPCR's effect on a policy digest (trial computation, no TPM needed)."""
    sel = pcr_selection(pcrs).marshal()
    pcr_digest = hashlib.sha256(b"".join(values)).digest()
    cc_policy_pcr = (0x17F).to_bytes(4, "big")
    return hashlib.sha256(start + cc_policy_pcr + sel + pcr_digest).digest()


class Tpm:
    """An open ESAPI context with the salt key; every method may raise TpmError."""

    def __init__(self, tcti: str) -> None:
        self.tcti = tcti
        try:
            self.esys = ESAPI(tcti)
        except TSS2_Exception as e:
            raise TpmError.wrap(f"cannot open the TPM through TCTI {tcti!r}", e) from e
        except Exception as e:  # the TCTI loader raises plain exceptions for bad strings
            raise TpmError(f"cannot open the TPM through TCTI {tcti!r}: {e}") from e
        self.salt: ESYS_TR | None = None

    def open(self) -> None:
        """Self-test, then the salt key for encrypted sessions (the original's start-up)."""
        try:
            self.esys.self_test(True)
        except TSS2_Exception as e:
            raise TpmError.wrap("TPM self-test failed", e) from e
        if not self.has_resource_manager:
            self.flush_leftovers()
        try:
            tmpl = TPM2B_PUBLIC.parse(
                "rsa2048:aes128cfb",
                objectAttributes="fixedtpm|fixedparent|sensitivedataorigin|userwithauth|restricted|decrypt|noda",
            )
            self.salt = self.esys.create_primary(TPM2B_SENSITIVE_CREATE(), tmpl, ESYS_TR.NULL)[0]
        except TSS2_Exception as e:
            raise TpmError.wrap("cannot create the session salt key in the NULL hierarchy", e) from e

    @property
    def has_resource_manager(self) -> bool:
        """/dev/tpmrm* and tpm2-abrmd flush what a dead client left in the TPM; a raw device or a
        simulator (swtpm) do not."""
        return "tpmrm" in self.tcti or self.tcti.startswith("tabrmd")

    def flush_leftovers(self) -> None:
        """Flush the transient objects and sessions a killed tpm2d left behind (SIGKILL skips its
        own flush): without it, every restart would leak and a few restarts fill the TPM's object
        slots ("out of memory for object contexts"). Only without a resource manager, where tpm2d
        is the TPM's only user."""
        flushed = 0
        for first in (TPM2_HT.TRANSIENT << 24, TPM2_HT.LOADED_SESSION << 24, TPM2_HT.SAVED_SESSION << 24):
            try:
                _more, data = self.esys.get_capability(TPM2_CAP.HANDLES, first, 64)
            except TSS2_Exception as e:
                log.warning("listing leftover TPM handles: %s", e)
                continue
            for handle in data.data.handles:
                try:
                    self.esys.flush_context(self.esys.tr_from_tpmpublic(handle))
                    flushed += 1
                except TSS2_Exception as e:
                    log.warning("flushing leftover TPM handle 0x%08x: %s", handle, e)
        if flushed:
            log.info("flushed %d transient object(s)/session(s) left in the TPM by an earlier tpm2d", flushed)

    def close(self) -> None:
        try:
            if self.salt is not None:
                self.esys.flush_context(self.salt)
        except TSS2_Exception as e:
            log.warning("flushing the salt key: %s", e)
        self.esys.close()

    # --- sessions -------------------------------------------------------------------------

    @contextmanager
    def hmac_session(self, encrypt: bool = True, decrypt: bool = True) -> Iterator[ESYS_TR]:
        """A salted HMAC session with parameter encryption (AES-128-CFB), flushed afterwards."""
        sess = self._start(TPM2_SE.HMAC)
        attrs = TPMA_SESSION.CONTINUESESSION
        if encrypt:
            attrs |= TPMA_SESSION.ENCRYPT
        if decrypt:
            attrs |= TPMA_SESSION.DECRYPT
        self.esys.trsess_set_attributes(sess, attrs)
        try:
            yield sess
        finally:
            self._flush(sess)

    @contextmanager
    def policy_session(self, trial: bool = False) -> Iterator[ESYS_TR]:
        """A salted policy session. It carries no parameter encryption itself (ESAPI and the TPM
        disagree on the key for a policy session without PolicyAuthValue): commands that
        return secrets add `hmac_session(encrypt=True)` as their second session."""
        sess = self._start(TPM2_SE.TRIAL if trial else TPM2_SE.POLICY)
        if not trial:
            self.esys.trsess_set_attributes(sess, TPMA_SESSION.CONTINUESESSION)
        try:
            yield sess
        finally:
            self._flush(sess)

    def _start(self, kind: TPM2_SE) -> ESYS_TR:
        try:
            return self.esys.start_auth_session(
                tpm_key=self.salt if self.salt is not None else ESYS_TR.NONE,
                bind=ESYS_TR.NONE, session_type=kind, symmetric=TPMT_SYM_DEF.parse("aes128cfb"),
                auth_hash=TPM2_ALG.SHA256)
        except TSS2_Exception as e:
            raise TpmError.wrap("cannot start a TPM session", e) from e

    def _flush(self, handle: ESYS_TR) -> None:
        try:
            self.esys.flush_context(handle)
        except TSS2_Exception as e:
            log.debug("flush %s: %s", handle, e)

    # --- simple commands ------------------------------------------------------------------

    def get_random(self, n: int) -> bytes:
        """n random bytes from the TPM (several GetRandom calls: one returns at most 32-64)."""
        out = bytearray()
        try:
            with self.hmac_session(encrypt=True, decrypt=False) as s:
                while len(out) < n:
                    chunk = bytes(self.esys.get_random(min(32, n - len(out)), session1=s))
                    if not chunk:
                        raise TpmError("TPM2_GetRandom returned no bytes")
                    out += chunk
        except TSS2_Exception as e:
            raise TpmError.wrap("TPM2_GetRandom", e) from e
        return bytes(out)

    def pcr_read(self, pcrs: list[int]) -> dict[int, bytes]:
        """SHA-256 values of `pcrs` (PCR_Read answers at most 8 at a time, so loop)."""
        want = sorted(set(pcrs))
        got: dict[int, bytes] = {}
        try:
            while True:
                rest = [p for p in want if p not in got]
                if not rest:
                    return got
                _, sel, digests = self.esys.pcr_read(pcr_selection(rest))
                returned = [p for p in rest if _selected(sel, p)]
                if not returned:
                    raise TpmError(f"TPM2_PCR_Read returned none of PCRs {rest} in the SHA-256 bank")
                for p, d in zip(returned, digests, strict=False):
                    got[p] = bytes(d)
        except TSS2_Exception as e:
            raise TpmError.wrap("TPM2_PCR_Read", e) from e

    def pcr_extend(self, pcr: int, digest: bytes) -> None:
        """Extend the SHA-256 bank of `pcr` with a 32-byte digest."""
        if len(digest) != SHA256_SIZE:
            raise TpmError(f"a SHA-256 extend needs 32 bytes, got {len(digest)}")
        ha = TPMT_HA(hashAlg=TPM2_ALG.SHA256)
        ha.digest.sha256 = digest
        vals = TPML_DIGEST_VALUES([ha])
        try:
            self.esys.pcr_extend(_pcr_handle(pcr), vals)
        except TSS2_Exception as e:
            raise TpmError.wrap(f"TPM2_PCR_Extend of PCR {pcr}", e) from e

    def clear(self, lockout_password: str) -> None:
        """TPM2_Clear with the lockout auth, then DictionaryAttackLockReset (the original's CLEAR)."""
        try:
            self.esys.tr_set_auth(ESYS_TR.LOCKOUT, auth_value(lockout_password, "the lockout password"))
            self.esys.clear(ESYS_TR.LOCKOUT)
            self.esys.dictionary_attack_lock_reset(ESYS_TR.LOCKOUT)
        except TSS2_Exception as e:
            raise TpmError.wrap("TPM2_Clear", e) from e
        finally:
            self.esys.tr_set_auth(ESYS_TR.LOCKOUT, b"")

    def change_owner_auth(self, old: str, new: str) -> None:
        try:
            self.esys.tr_set_auth(ESYS_TR.OWNER, auth_value(old, "the owner password"))
            with self.hmac_session(encrypt=False, decrypt=True) as s:
                self.esys.hierarchy_change_auth(ESYS_TR.OWNER, auth_value(new, "the new owner password"), session1=s)
        except TSS2_Exception as e:
            raise TpmError.wrap("TPM2_HierarchyChangeAuth(owner)", e) from e
        finally:
            self.esys.tr_set_auth(ESYS_TR.OWNER, b"")

    def quote(self, key: ESYS_TR, pcrs: list[int], nonce: bytes) -> tuple[bytes, bytes]:
        """TPM2_Quote over the SHA-256 `pcrs`, RSASSA/SHA-256 as the original (inventory §2.14
        item 9). Returns (marshalled TPMS_ATTEST, marshalled TPMT_SIGNATURE)."""
        scheme = TPMT_SIG_SCHEME(scheme=TPM2_ALG.RSASSA)
        scheme.details.any.hashAlg = TPM2_ALG.SHA256
        try:
            attest, sig = self.esys.quote(key, pcr_selection(pcrs), nonce, scheme)
        except TSS2_Exception as e:
            raise TpmError.wrap("TPM2_Quote", e) from e
        return bytes(attest), sig.marshal()


def _selected(sel: TPML_PCR_SELECTION, pcr: int) -> bool:
    for i in range(sel.count):
        s = sel.pcrSelections[i]
        if s.hash == TPM2_ALG.SHA256 and pcr // 8 < s.sizeofSelect and bytes(s.pcrSelect)[pcr // 8] & (1 << pcr % 8):
            return True
    return False


def _pcr_handle(pcr: int) -> ESYS_TR:
    if not 0 <= pcr < MAX_PCR:
        raise TpmError(f"PCR {pcr} out of range 0..{MAX_PCR - 1}")
    return ESYS_TR(int(ESYS_TR.PCR0) + pcr)


