"""Signing with the TPM device key for scd (DEVICE_KEY_SIGN / DEVICE_KEY_PUBLIC, ours).

In the original's TPM build the attestation key *is* the device key: scd loads
`attestation_tss.pem` through OpenSSL's tpm2 provider to sign the CSR and to authenticate TLS
clients, so the device certificate names the quoting key. We keep that identity (a certificate
issued for the CSR signed here certifies the attestation key), but scd does not open the TPM:
it sends the bytes to sign to tpm2d, which hashes them *in the TPM* (HashSequence, which yields
a validation ticket) and signs with the restricted key. The TPM refuses the ticket for data that
starts like a TPM-generated structure, so no caller can make this key sign a forged quote.
"""

from __future__ import annotations

from tpm2_pytss import TSS2_Exception
from tpm2_pytss.constants import ESYS_TR, TPM2_ALG
from tpm2_pytss.types import TPMT_SIG_SCHEME

from .keys import AttestationKey
from .tpm import TpmError

MAX_SIGN_DATA = 64 * 1024
CHUNK = 1024  # TPM2B_MAX_BUFFER


def sign(ak: AttestationKey, data: bytes) -> bytes:
    """RSASSA-PKCS1-v1_5 / SHA-256 signature over `data` (the raw signature bytes)."""
    if not data:
        raise TpmError("DEVICE_KEY_SIGN without sign_data")
    if len(data) > MAX_SIGN_DATA:
        raise TpmError(f"sign_data has {len(data)} bytes; at most {MAX_SIGN_DATA}")
    esys = ak.tpm.esys
    try:
        seq = esys.hash_sequence_start(b"", TPM2_ALG.SHA256)
        chunks = [data[i:i + CHUNK] for i in range(0, len(data), CHUNK)]
        for c in chunks[:-1]:
            esys.sequence_update(seq, c, session1=ESYS_TR.PASSWORD)
        digest, ticket = esys.sequence_complete(seq, chunks[-1], ESYS_TR.OWNER, session1=ESYS_TR.PASSWORD)
    except TSS2_Exception as e:
        raise TpmError.wrap("hashing in the TPM (HashSequence)", e) from e
    scheme = TPMT_SIG_SCHEME(scheme=TPM2_ALG.RSASSA)
    scheme.details.any.hashAlg = TPM2_ALG.SHA256
    with ak.loaded() as handle:
        try:
            sig = esys.sign(handle, digest, scheme, ticket)
        except TSS2_Exception as e:
            raise TpmError.wrap("TPM2_Sign with the device key (refused for TPM-generated-looking data)", e) from e
    return bytes(sig.signature.rsassa.sig)
