"""Who signed something, for an audit record: the subject of a PEM certificate, or why not."""

from __future__ import annotations

from cryptography import x509

MAX_CERT = 64 * 1024


def signer_of(cert_pem: bytes) -> str:
    if not cert_pem:
        return "(no certificate)"
    if len(cert_pem) > MAX_CERT:
        return "(certificate too large)"
    try:
        return x509.load_pem_x509_certificate(cert_pem).subject.rfc4514_string()
    except ValueError:
        return "(unreadable certificate)"
