"""CRYPTO_VERIFY_*: signer certificate chain against the trust anchors, then the signature over
the exact data bytes (inventory §2.7, §4.3).

Signatures: RSA PKCS#1 v1.5 and RSA-PSS (MGF1 with the same hash; any salt length, so both
OpenSSL's `saltlen -1` (digest length) and `max` verify), ECDSA (P-256/P-384, DER). The original
chose the padding by the certificate's key type and rejected EC keys; we accept all three.
"""

from __future__ import annotations

import datetime
from dataclasses import dataclass

from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa

from cml_common.certs import load_pem_certificates
from cml_common.messages.scd_pb2 import HashAlgo, TokenToDaemon

from .chain import ChainError, build_path
from .trust import Anchor

T = TokenToDaemon
HASHES: dict[int, type[hashes.HashAlgorithm]] = {
    HashAlgo.SHA1: hashes.SHA1, HashAlgo.SHA256: hashes.SHA256, HashAlgo.SHA512: hashes.SHA512,
}
MAX_CERT_FILE = 256 * 1024
MAX_SIG = 16 * 1024


@dataclass(frozen=True)
class Result:
    code: TokenToDaemon.Code
    reason: str

    @property
    def name(self) -> str:
        return T.Code.Name(self.code)


def check_signature(cert: x509.Certificate, data: bytes, sig: bytes, algo: int) -> bool:
    h = HASHES[algo]()
    pub = cert.public_key()
    try:
        if isinstance(pub, rsa.RSAPublicKey):
            try:
                pub.verify(sig, data, padding.PSS(mgf=padding.MGF1(h), salt_length=padding.PSS.AUTO), h)
            except InvalidSignature:
                pub.verify(sig, data, padding.PKCS1v15(), h)
            return True
        if isinstance(pub, ec.EllipticCurvePublicKey):
            pub.verify(sig, data, ec.ECDSA(h))
            return True
    except (InvalidSignature, ValueError):
        return False
    return False


def verify(data: bytes, sig: bytes, cert_pem: bytes, algo: int, anchors: list[Anchor],
           check_time: bool, now: datetime.datetime | None = None) -> Result:
    if algo not in HASHES:
        return Result(T.CRYPTO_VERIFY_ERROR, f"unknown hash algorithm {algo}")
    if len(cert_pem) > MAX_CERT_FILE or len(sig) > MAX_SIG:
        return Result(T.CRYPTO_VERIFY_ERROR, "certificate or signature file too large")
    if not sig:
        return Result(T.CRYPTO_VERIFY_ERROR, "empty signature")
    try:
        chain = load_pem_certificates(cert_pem)
        leaf, intermediates = chain[0], chain[1:]
        # cryptography parses names and keys lazily: read the signer's now, so a certificate
        # whose subject or key cannot be read is refused here (found by fuzzing scd_verify).
        leaf.subject.rfc4514_string()
        leaf.public_key()
    except (ValueError, UnsupportedAlgorithm) as e:
        return Result(T.CRYPTO_VERIFY_ERROR, f"certificate file does not parse: {e}")
    when = (now or datetime.datetime.now(datetime.UTC)) if check_time else None
    if not anchors:
        return Result(T.CRYPTO_VERIFY_BAD_CERTIFICATE, "no trust anchor installed")
    failures: list[str] = []
    trusted: Anchor | None = None
    for anchor in anchors:
        for root in anchor.certs:
            try:
                path = build_path(leaf, intermediates, root, when)
            except ChainError as e:
                failures.append(f"{anchor.name}: {e}")
                continue
            trusted = anchor
            break
        if trusted:
            break
    if trusted is None:
        return Result(T.CRYPTO_VERIFY_BAD_CERTIFICATE,
                      f"signer '{leaf.subject.rfc4514_string()}' not trusted: " + "; ".join(failures))
    try:
        ok = check_signature(leaf, data, sig, algo)
    except UnsupportedAlgorithm as e:
        return Result(T.CRYPTO_VERIFY_ERROR, f"unsupported signer key: {e}")
    if not ok:
        return Result(T.CRYPTO_VERIFY_BAD_SIGNATURE,
                      f"signature does not match the data and the key of '{leaf.subject.rfc4514_string()}'")
    chain_text = " -> ".join(c.subject.rfc4514_string() for c in path)
    if trusted.local:
        return Result(T.CRYPTO_VERIFY_LOCALLY_SIGNED, f"locally signed: {chain_text} ({trusted.name})")
    time_note = "" if check_time else " (validity times not checked)"
    return Result(T.CRYPTO_VERIFY_GOOD, f"good: {chain_text} ({trusted.name}){time_note}")
