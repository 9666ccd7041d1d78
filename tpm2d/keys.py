"""The storage primary (persisted at 0x81000000) and the attestation key under it, with the
original's key files in `<base>/tpm2d/tokens` (inventory §5.1):

| file | content |
|---|---|
| `attestation_priv.bin` | marshalled TPM2B_PRIVATE (the key wrapped by the storage primary) |
| `attestation_pub.bin` | marshalled TPM2B_PUBLIC |
| `attestation_tss.pem` | the same key as a `TSS2 PRIVATE KEY` (OpenSSL tpm2 provider format) |
| `attestation_pt_pub.bin` | marshalled TPM2B_PUBLIC of the storage primary, when we created it |

Keys found on disk are reused after a restart (also files written by the original tpm2d). A
new attestation key is RSA-2048, fixedTPM/fixedParent, **restricted** signing with
RSASSA/SHA-256: quotes are signed exactly as the original signs them, but the TPM itself refuses
to sign data that imitates a TPM-generated structure, so nobody with access to the key can forge
a quote. The original's key is unrestricted (sign+decrypt); we load such a key too.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from tpm2_pytss import TSS2_Exception
from tpm2_pytss.constants import ESYS_TR, TPM2_ALG, TPMA_OBJECT
from tpm2_pytss.tsskey import TSSPrivKey
from tpm2_pytss.types import TPM2B_PRIVATE, TPM2B_PUBLIC, TPM2B_SENSITIVE_CREATE

from cml_common.fsutil import write_atomic

from .tpm import Tpm, TpmError

log = logging.getLogger(__name__)

STORAGE_PRIMARY_HANDLE = 0x81000000
PRIMARY_ATTRS = "fixedtpm|fixedparent|sensitivedataorigin|userwithauth|restricted|decrypt|noda"
AK_ATTRS = "fixedtpm|fixedparent|sensitivedataorigin|userwithauth|restricted|sign"


class KeyFiles:
    def __init__(self, tokens: Path) -> None:
        self.dir = tokens
        self.priv = tokens / "attestation_priv.bin"
        self.pub = tokens / "attestation_pub.bin"
        self.tss = tokens / "attestation_tss.pem"
        self.parent_pub = tokens / "attestation_pt_pub.bin"


def storage_primary(tpm: Tpm, files: KeyFiles) -> ESYS_TR:
    """The persistent storage primary, created and persisted (EvictControl) if missing."""
    try:
        return tpm.esys.tr_from_tpmpublic(STORAGE_PRIMARY_HANDLE)
    except TSS2_Exception:
        log.info("no storage primary at %#x: creating and persisting one", STORAGE_PRIMARY_HANDLE)
    try:
        tmpl = TPM2B_PUBLIC.parse("rsa2048:aes128cfb", objectAttributes=PRIMARY_ATTRS)
        handle, pub, *_ = tpm.esys.create_primary(TPM2B_SENSITIVE_CREATE(), tmpl, ESYS_TR.OWNER)
    except TSS2_Exception as e:
        raise TpmError.wrap("cannot create the storage primary in the owner hierarchy", e) from e
    try:
        persistent = tpm.esys.evict_control(ESYS_TR.OWNER, handle, STORAGE_PRIMARY_HANDLE)
    except TSS2_Exception as e:
        raise TpmError.wrap(f"cannot persist the storage primary at {STORAGE_PRIMARY_HANDLE:#x}", e) from e
    finally:
        tpm.esys.flush_context(handle)
    write_atomic(files.parent_pub, pub.marshal(), mode=0o644)
    return persistent


class AttestationKey:
    """The attestation key: its wrapped private part and public area. It is loaded for each use
    and flushed right after, as the original does, so it holds no TPM object slot in between
    (a TPM without a resource manager has only three)."""

    def __init__(self, tpm: Tpm, parent: ESYS_TR, private: TPM2B_PRIVATE, public: TPM2B_PUBLIC) -> None:
        self.tpm = tpm
        self.parent = parent
        self.private = private
        self.public = public
        try:
            # The parent's public area lets a verifier recompute the AK's qualified name, which
            # the TPM puts in every quote (qualifiedSigner).
            self.parent_public = bytes(tpm.esys.read_public(parent)[0].marshal())
        except TSS2_Exception as e:
            raise TpmError.wrap("TPM2_ReadPublic of the storage primary", e) from e

    @contextmanager
    def loaded(self) -> Iterator[ESYS_TR]:
        try:
            handle = self.tpm.esys.load(self.parent, self.private, self.public)
        except TSS2_Exception as e:
            raise TpmError.wrap("cannot load the attestation key (another TPM, or cleared?)", e) from e
        try:
            yield handle
        finally:
            self.tpm.esys.flush_context(handle)

    @property
    def restricted(self) -> bool:
        return bool(self.public.publicArea.objectAttributes & TPMA_OBJECT.RESTRICTED)

    def public_marshalled(self) -> bytes:
        return bytes(self.public.marshal())

    def public_pem(self) -> bytes:
        key = self.public.publicArea.to_pem()
        return bytes(key)

    def public_key(self) -> object:
        return serialization.load_pem_public_key(self.public_pem())


def setup(tpm: Tpm, tokens: Path) -> AttestationKey:
    """Load the attestation key from its files, or create it (and the primary) when missing."""
    files = KeyFiles(tokens)
    tokens.mkdir(parents=True, exist_ok=True, mode=0o700)
    parent = storage_primary(tpm, files)
    if files.priv.exists() and files.pub.exists():
        return _load(tpm, parent, files)
    if files.priv.exists() or files.pub.exists():
        raise TpmError(f"half an attestation key in {tokens}: {files.priv.name} and {files.pub.name} "
                       "must both exist; move the stray file away to create a new key")
    tmpl = TPM2B_PUBLIC.parse("rsa2048:rsassa-sha256:null", objectAttributes=AK_ATTRS)
    try:
        priv, pub, *_ = tpm.esys.create(parent, TPM2B_SENSITIVE_CREATE(), tmpl)
    except TSS2_Exception as e:
        raise TpmError.wrap("cannot create the attestation key under the storage primary", e) from e
    tss = TSSPrivKey(priv, pub, empty_auth=True, parent=STORAGE_PRIMARY_HANDLE)
    # The pair is written public-first and the private part last, so a crash in between leaves a
    # state that the next start reports (above) instead of a key it would silently replace.
    write_atomic(files.tss, tss.to_pem(), mode=0o600)
    write_atomic(files.pub, pub.marshal(), mode=0o644)
    write_atomic(files.priv, priv.marshal(), mode=0o600)
    log.info("created the attestation key (RSA-2048, restricted, RSASSA/SHA-256) in %s", tokens)
    return _load(tpm, parent, files)


def _load(tpm: Tpm, parent: ESYS_TR, files: KeyFiles) -> AttestationKey:
    try:
        priv, _ = TPM2B_PRIVATE.unmarshal(files.priv.read_bytes())
        pub, _ = TPM2B_PUBLIC.unmarshal(files.pub.read_bytes())
    except Exception as e:
        raise TpmError(f"attestation key files in {files.dir} do not parse ({e}); left untouched") from e
    if pub.publicArea.type != TPM2_ALG.RSA:
        raise TpmError(f"{files.pub} is not an RSA key")
    ak = AttestationKey(tpm, parent, priv, pub)
    with ak.loaded():  # fails now, at start, if the files belong to another TPM
        pass
    return ak
