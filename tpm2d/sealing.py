"""Secrets sealed to a *signed* PCR policy, with a recovery key (ours; peers.md take-away 5).

A literal PCR policy (the original's PCR-7 FDE key) bricks the device on the first update that
changes a PCR. Here a sealed object's authPolicy is

    PolicyOR( PolicyAuthorize(seal authority, ref=""),  PolicyAuthValue )

- Branch A: any PCR policy (TPM2_PolicyPCR digest) that the seal authority (an operator key,
  RSA or EC P-256, public part given at SEAL_CREATE) has signed. After an update, the vendor signs
  the new expected PCR values (SEAL_POLICY_UPDATE installs them) and the same sealed object
  unseals again. A policy signed by any other key is refused by tpm2d and could not satisfy
  the TPM's PolicyAuthorize either (the authority's name is part of the object's policy).
- Branch B: the object's authValue, SHA-256 of a recovery key made once at SEAL_CREATE and shown
  only then. It unseals whatever the PCRs are, and is subject to the TPM's dictionary-attack
  lockout.

Files per sealed object `<name>` in `<base>/tpm2d/tokens`: `seal_<name>.priv`/`.pub` (TPM2B),
`seal_<name>.authority.pem`, `seal_<name>.policy` (the installed SignedPcrPolicy).
"""

from __future__ import annotations

import hashlib
import logging
import re
import secrets as pysecrets
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature
from google.protobuf.message import DecodeError
from tpm2_pytss import TSS2_Exception
from tpm2_pytss.constants import ESYS_TR, TPM2_ALG
from tpm2_pytss.types import (
    TPM2B_DIGEST,
    TPM2B_PRIVATE,
    TPM2B_PUBLIC,
    TPM2B_SENSITIVE_CREATE,
    TPML_DIGEST,
    TPMS_SENSITIVE_CREATE,
    TPMT_SIGNATURE,
)

from cml_common.fsutil import remove_quietly, write_atomic
from cml_common.messages.tpm2d_pb2 import SignedPcrPolicy

from . import policy_math
from .tpm import Tpm, TpmError, pcr_selection

log = logging.getLogger(__name__)

NAME_RE = re.compile(r"^[a-z0-9_-]{1,32}$")
SECRET_LEN = 32
MAX_POLICY = 16 * 1024
MAX_AUTHORITY = 16 * 1024


class SealError(Exception):
    pass


@dataclass(frozen=True)
class SealFiles:
    priv: Path
    pub: Path
    authority: Path
    policy: Path

    @classmethod
    def of(cls, tokens: Path, name: str) -> SealFiles:
        if not NAME_RE.match(name):
            raise SealError(f"seal_name {name!r} must match [a-z0-9_-]{{1,32}}")
        base = tokens / f"seal_{name}"
        return cls(Path(f"{base}.priv"), Path(f"{base}.pub"), Path(f"{base}.authority.pem"),
                   Path(f"{base}.policy"))

    def all(self) -> tuple[Path, ...]:
        return (self.priv, self.pub, self.authority, self.policy)


def format_recovery_key(raw: bytes) -> str:
    h = raw.hex()
    return "-".join(h[i:i + 4] for i in range(0, len(h), 4))


def recovery_auth(recovery_key: str) -> bytes:
    """The authValue for a recovery key as typed (dashes and case do not matter)."""
    return hashlib.sha256(recovery_key.strip().lower().replace("-", "").encode()).digest()


def load_authority(pem: bytes) -> rsa.RSAPublicKey | ec.EllipticCurvePublicKey:
    if len(pem) > MAX_AUTHORITY:
        raise SealError("seal_authority is larger than 16 KiB")
    try:
        key = serialization.load_pem_public_key(pem)
    except (ValueError, TypeError) as e:
        raise SealError(f"seal_authority is not a PEM public key: {e}") from e
    if isinstance(key, rsa.RSAPublicKey) and key.key_size >= 2048:
        return key
    if isinstance(key, ec.EllipticCurvePublicKey) and isinstance(key.curve, ec.SECP256R1):
        return key
    raise SealError("seal_authority must be RSA (>= 2048 bits) or EC P-256")


def parse_policy(blob: bytes) -> SignedPcrPolicy:
    if not blob:
        raise SealError("no seal_policy given")
    if len(blob) > MAX_POLICY:
        raise SealError("seal_policy is larger than 16 KiB")
    pol = SignedPcrPolicy()
    try:
        pol.ParseFromString(blob)
    except DecodeError as e:
        raise SealError(f"seal_policy does not parse as SignedPcrPolicy: {e}") from e
    if not pol.pcrs or any(not 0 <= p < 24 for p in pol.pcrs) or len(pol.pcr_digest) != 32:
        raise SealError("seal_policy needs PCR numbers 0..23 and a 32-byte pcr_digest")
    if pol.approved_policy != policy_math.policy_pcr(list(pol.pcrs), pol.pcr_digest):
        raise SealError("seal_policy's approved_policy is not the PolicyPCR digest of its pcrs and pcr_digest")
    if not pol.signature:
        raise SealError("seal_policy has no signature")
    if pol.policy_ref:
        raise SealError("seal_policy has a policy_ref; sealed objects are made for an empty one")
    return pol


def check_signature_soft(authority: rsa.RSAPublicKey | ec.EllipticCurvePublicKey, pol: SignedPcrPolicy) -> None:
    data = bytes(pol.approved_policy) + bytes(pol.policy_ref)
    try:
        if isinstance(authority, rsa.RSAPublicKey):
            authority.verify(pol.signature, data, padding.PKCS1v15(), hashes.SHA256())
        else:
            authority.verify(pol.signature, data, ec.ECDSA(hashes.SHA256()))
    except (InvalidSignature, ValueError) as e:
        raise SealError("seal_policy is not signed by this object's seal authority") from e


def tpm_signature(authority: rsa.RSAPublicKey | ec.EllipticCurvePublicKey, sig: bytes) -> TPMT_SIGNATURE:
    t = TPMT_SIGNATURE()
    if isinstance(authority, rsa.RSAPublicKey):
        t.sigAlg = TPM2_ALG.RSASSA
        t.signature.rsassa.hash = TPM2_ALG.SHA256
        t.signature.rsassa.sig = sig
    else:
        r, s = decode_dss_signature(sig)
        t.sigAlg = TPM2_ALG.ECDSA
        t.signature.ecdsa.hash = TPM2_ALG.SHA256
        t.signature.ecdsa.signatureR = r.to_bytes(32, "big")
        t.signature.ecdsa.signatureS = s.to_bytes(32, "big")
    return t


class Sealer:
    def __init__(self, tpm: Tpm, tokens: Path, parent: ESYS_TR) -> None:
        self.tpm = tpm
        self.tokens = tokens
        self.parent = parent

    @contextmanager
    def _authority(self, pem: bytes) -> Iterator[tuple[ESYS_TR, bytes]]:
        """The authority's public key loaded (owner hierarchy, so its tickets are not NULL)."""
        key = load_authority(pem)
        try:
            if isinstance(key, rsa.RSAPublicKey):
                pub = TPM2B_PUBLIC.from_pem(pem, objectAttributes="sign|userwithauth")
                pub.publicArea.parameters.rsaDetail.scheme.scheme = TPM2_ALG.NULL
            else:
                pub = TPM2B_PUBLIC.from_pem(pem, objectAttributes="sign|userwithauth")
                pub.publicArea.parameters.eccDetail.scheme.scheme = TPM2_ALG.NULL
            handle = self.tpm.esys.load_external(pub, None, ESYS_TR.OWNER)
        except TSS2_Exception as e:
            raise TpmError.wrap("TPM2_LoadExternal of the seal authority", e) from e
        try:
            yield handle, bytes(self.tpm.esys.tr_get_name(handle))
        finally:
            self.tpm.esys.flush_context(handle)

    def create(self, name: str, authority_pem: bytes, policy_blob: bytes) -> str:
        """Seal a fresh TPM-random secret; returns the recovery key (shown once)."""
        files = SealFiles.of(self.tokens, name)
        if any(p.exists() for p in files.all()):
            raise SealError(f"sealed object {name!r} already exists (files {files.pub.parent}/seal_{name}.*)")
        authority = load_authority(authority_pem)
        pol = parse_policy(policy_blob) if policy_blob else None
        if pol is not None:
            check_signature_soft(authority, pol)
        with self._authority(authority_pem) as (_, key_name):
            branch_a = policy_math.policy_authorize(key_name)
        auth_policy = policy_math.policy_or([branch_a, policy_math.policy_auth_value()])
        secret = self.tpm.get_random(SECRET_LEN)
        recovery = format_recovery_key(pysecrets.token_bytes(16))
        tmpl = TPM2B_PUBLIC.parse("keyedhash", objectAttributes="fixedtpm|fixedparent", authPolicy=auth_policy)
        sens = TPM2B_SENSITIVE_CREATE(TPMS_SENSITIVE_CREATE(userAuth=recovery_auth(recovery), data=secret))
        try:
            with self.tpm.hmac_session(encrypt=False, decrypt=True) as s:
                priv, pub, *_ = self.tpm.esys.create(self.parent, sens, tmpl, session1=s)
        except TSS2_Exception as e:
            raise TpmError.wrap("TPM2_Create of the sealed object", e) from e
        try:
            write_atomic(files.authority, authority_pem, mode=0o644)
            if pol is not None:
                write_atomic(files.policy, policy_blob, mode=0o644)
            write_atomic(files.pub, pub.marshal(), mode=0o644)
            write_atomic(files.priv, priv.marshal(), mode=0o600)
        except OSError:
            remove_quietly(*files.all())
            raise
        log.info("sealed a %d-byte secret as %r (signed PCR policy or recovery key)", SECRET_LEN, name)
        return recovery

    def _load_files(self, name: str) -> tuple[SealFiles, TPM2B_PRIVATE, TPM2B_PUBLIC, bytes]:
        files = SealFiles.of(self.tokens, name)
        if not files.priv.exists() or not files.pub.exists() or not files.authority.exists():
            raise SealError(f"no sealed object {name!r}")
        try:
            priv, _ = TPM2B_PRIVATE.unmarshal(files.priv.read_bytes())
            pub, _ = TPM2B_PUBLIC.unmarshal(files.pub.read_bytes())
        except Exception as e:
            raise SealError(f"sealed object {name!r} files do not parse: {e}") from e
        return files, priv, pub, files.authority.read_bytes()

    def update_policy(self, name: str, policy_blob: bytes) -> None:
        """Install a newly signed PCR policy after checking its signature in the TPM."""
        files, _, _, authority_pem = self._load_files(name)
        pol = parse_policy(policy_blob)
        authority = load_authority(authority_pem)
        check_signature_soft(authority, pol)
        with self._authority(authority_pem) as (handle, _):
            digest = policy_math.authorization_hash(pol.approved_policy, pol.policy_ref)
            try:
                self.tpm.esys.verify_signature(handle, TPM2B_DIGEST(digest), tpm_signature(authority, pol.signature))
            except TSS2_Exception as e:
                raise SealError(f"the TPM rejects the policy signature: {e}") from e
        write_atomic(files.policy, policy_blob, mode=0o644)
        log.info("installed a new signed PCR policy for %r (PCRs %s%s)", name, list(pol.pcrs),
                 f", {pol.description}" if pol.description else "")

    def unseal(self, name: str) -> bytes:
        files, priv, pub, authority_pem = self._load_files(name)
        if not files.policy.exists():
            raise SealError(f"no signed PCR policy installed for {name!r} (SEAL_POLICY_UPDATE)")
        pol = parse_policy(files.policy.read_bytes())
        authority = load_authority(authority_pem)
        with self.tpm.policy_session() as sess:
            # The authority is flushed before the sealed object is loaded: a TPM without a
            # resource manager has three object slots (salt key, parent in use, sealed object).
            with self._authority(authority_pem) as (auth_handle, key_name):
                branches = [policy_math.policy_authorize(key_name), policy_math.policy_auth_value()]
                try:
                    self.tpm.esys.policy_pcr(sess, b"", pcr_selection(list(pol.pcrs)))
                except TSS2_Exception as e:
                    raise TpmError.wrap("TPM2_PolicyPCR", e) from e
                now = bytes(self.tpm.esys.policy_get_digest(sess))
                if now != bytes(pol.approved_policy):
                    raise SealError(f"PCRs {list(pol.pcrs)} do not have the values the signed policy expects "
                                    "(use the recovery key, or install a policy signed for these values)")
                try:
                    ticket = self.tpm.esys.verify_signature(
                        auth_handle, TPM2B_DIGEST(policy_math.authorization_hash(now)),
                        tpm_signature(authority, pol.signature))
                    self.tpm.esys.policy_authorize(sess, now, key_name, ticket, b"")
                    self.tpm.esys.policy_or(sess, TPML_DIGEST(branches))
                except TSS2_Exception as e:
                    raise TpmError.wrap("authorizing the signed PCR policy", e) from e
            return self._unseal_with(priv, pub, sess, None)

    def unseal_recovery(self, name: str, recovery_key: str) -> bytes:
        _, priv, pub, authority_pem = self._load_files(name)
        with self._authority(authority_pem) as (_, key_name):
            branches = [policy_math.policy_authorize(key_name), policy_math.policy_auth_value()]
        with self.tpm.policy_session() as sess:
            try:
                self.tpm.esys.policy_auth_value(sess)
                self.tpm.esys.policy_or(sess, TPML_DIGEST(branches))
            except TSS2_Exception as e:
                raise TpmError.wrap("the recovery policy", e) from e
            return self._unseal_with(priv, pub, sess, recovery_auth(recovery_key))

    def _unseal_with(self, priv: TPM2B_PRIVATE, pub: TPM2B_PUBLIC, sess: ESYS_TR, auth: bytes | None) -> bytes:
        try:
            handle = self.tpm.esys.load(self.parent, priv, pub)
        except TSS2_Exception as e:
            raise TpmError.wrap("loading the sealed object (another TPM, or cleared?)", e) from e
        try:
            if auth is not None:
                self.tpm.esys.tr_set_auth(handle, auth)
            with self.tpm.hmac_session(encrypt=True, decrypt=False) as enc:
                return bytes(self.tpm.esys.unseal(handle, session1=sess, session2=enc))
        except TSS2_Exception as e:
            raise TpmError.wrap("TPM2_Unseal", e) from e
        finally:
            self.tpm.esys.flush_context(handle)
