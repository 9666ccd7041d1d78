"""What a checkpoint signs, and the check of its signature against the trusted device certificate.

The signed statement names the sequence number and hash of the entry the checkpoint seals (and,
through the chain, every entry before it) and the checkpoint's time. A signature counts only when
the key in the checkpoint's certificate is the trusted device key: a journal re-sealed with some
other key (journald FSS, CVE-2023-31439) fails.
"""

from __future__ import annotations

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa


def statement(covers: int, covers_hash: str, time: int) -> bytes:
    return f"CML-AUDIT-CHECKPOINT v1\nseq={covers}\nhash={covers_hash}\ntime={time}\n".encode()


def public_der(cert: x509.Certificate) -> bytes:
    return cert.public_key().public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)


def load_cert(pem: str | bytes) -> x509.Certificate:
    """ValueError for anything that is not one PEM certificate."""
    return x509.load_pem_x509_certificate(pem.encode() if isinstance(pem, str) else pem)


def signature_valid(cert: x509.Certificate, data: bytes, sig: bytes) -> bool:
    """SHA-256 signatures as scd makes them: ECDSA for an EC device key, PKCS#1 v1.5 for RSA
    (also the TPM's restricted key)."""
    key = cert.public_key()
    try:
        if isinstance(key, ec.EllipticCurvePublicKey):
            key.verify(sig, data, ec.ECDSA(hashes.SHA256()))
        elif isinstance(key, rsa.RSAPublicKey):
            key.verify(sig, data, padding.PKCS1v15(), hashes.SHA256())
        else:
            return False
    except (InvalidSignature, ValueError):
        return False
    return True
