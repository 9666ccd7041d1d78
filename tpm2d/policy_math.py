"""TPM 2.0 policy digests computed in software (TPM 2.0 Part 3, §23), without tpm2-pytss, so the
operator's tools (signing a PCR policy) and tests can use them on any machine.

All digests use SHA-256 (the nameAlg of our objects and sessions).
"""

from __future__ import annotations

import hashlib
import struct

TPM_CC_POLICY_AUTHORIZE = 0x16A
TPM_CC_POLICY_AUTH_VALUE = 0x16B
TPM_CC_POLICY_OR = 0x171
TPM_CC_POLICY_PCR = 0x17F
TPM_ALG_SHA256 = 0x000B
ZERO = bytes(32)


def _h(*parts: bytes) -> bytes:
    return hashlib.sha256(b"".join(parts)).digest()


def pcr_selection_bytes(pcrs: list[int]) -> bytes:
    """Marshalled TPML_PCR_SELECTION: one SHA-256 selection of `pcrs` (0..23)."""
    bitmap = bytearray(3)
    for p in pcrs:
        if not 0 <= p < 24:
            raise ValueError(f"PCR {p} out of range 0..23")
        bitmap[p // 8] |= 1 << (p % 8)
    return struct.pack(">IHB", 1, TPM_ALG_SHA256, 3) + bytes(bitmap)


def pcr_digest(values: list[bytes]) -> bytes:
    """The pcrDigest of TPM2_PolicyPCR: SHA-256 over the selected values in ascending order."""
    return _h(*values)


def policy_pcr(pcrs: list[int], digest_of_values: bytes, start: bytes = ZERO) -> bytes:
    return _h(start, struct.pack(">I", TPM_CC_POLICY_PCR), pcr_selection_bytes(sorted(set(pcrs))),
              digest_of_values)


def policy_authorize(key_name: bytes, policy_ref: bytes = b"") -> bytes:
    """PolicyAuthorize resets the digest, extends CC || keyName, then extends policyRef."""
    return _h(_h(ZERO, struct.pack(">I", TPM_CC_POLICY_AUTHORIZE), key_name), policy_ref)


def policy_auth_value(start: bytes = ZERO) -> bytes:
    return _h(start, struct.pack(">I", TPM_CC_POLICY_AUTH_VALUE))


def policy_or(branches: list[bytes]) -> bytes:
    return _h(ZERO, struct.pack(">I", TPM_CC_POLICY_OR), *branches)


def authorization_hash(approved_policy: bytes, policy_ref: bytes = b"") -> bytes:
    """aHash: what the seal authority signs (TPM2_VerifySignature's digest for PolicyAuthorize)."""
    return _h(approved_policy, policy_ref)
