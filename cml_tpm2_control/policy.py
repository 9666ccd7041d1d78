"""Signing a PCR policy for sealed secrets (the seal authority's side, offline).

    cml-tpm2-control seal_policy_sign --key authority.key --pcr 7=<hex> --pcr 11=<hex> -o new.policy

The output is a serialized SignedPcrPolicy (proto/tpm2d.proto): the PolicyPCR digest of the
expected values and the authority's signature (RSASSA-PKCS1-v1_5 or ECDSA, SHA-256) over
SHA-256(approved_policy || ""), which TPM2_VerifySignature turns into a PolicyAuthorize ticket.
"""

from __future__ import annotations

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.asymmetric.types import PrivateKeyTypes

from cml_common.messages.tpm2d_pb2 import SignedPcrPolicy
from tpm2d import policy_math


class PolicyInputError(ValueError):
    pass


def parse_pcr_args(items: list[str]) -> dict[int, bytes]:
    out: dict[int, bytes] = {}
    for item in items:
        num, sep, value = item.partition("=")
        try:
            n = int(num)
            v = bytes.fromhex(value.removeprefix("0x").removeprefix("0X"))
        except ValueError as e:
            raise PolicyInputError(f"--pcr {item!r}: expected N=<64 hex digits>") from e
        if not sep or not 0 <= n < 24 or len(v) != 32:
            raise PolicyInputError(f"--pcr {item!r}: expected N=<64 hex digits> with N in 0..23")
        if n in out:
            raise PolicyInputError(f"PCR {n} given twice")
        out[n] = v
    if not out:
        raise PolicyInputError("no --pcr N=<hex> given")
    return out


def sign_policy(key: PrivateKeyTypes, pcrs: dict[int, bytes], description: str = "") -> SignedPcrPolicy:
    order = sorted(pcrs)
    digest = policy_math.pcr_digest([pcrs[p] for p in order])
    approved = policy_math.policy_pcr(order, digest)
    if isinstance(key, rsa.RSAPrivateKey):
        sig = key.sign(approved, padding.PKCS1v15(), hashes.SHA256())
    elif isinstance(key, ec.EllipticCurvePrivateKey):
        sig = key.sign(approved, ec.ECDSA(hashes.SHA256()))
    else:
        raise PolicyInputError("the seal authority key must be RSA or EC P-256")
    return SignedPcrPolicy(pcrs=order, pcr_digest=digest, approved_policy=approved, signature=sig,
                           description=description)
