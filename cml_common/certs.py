"""Loading PEM certificates that come from outside (a pushed CA or device certificate, a
signer's chain, an attestation response, a trust anchor file).

`cryptography` raises `x509.InvalidVersion` for a certificate whose version field is not v1..v3,
and that is not a ValueError: every caller that caught ValueError let it escape as an internal
error (found by fuzzing scd's verification and PUSH_DEVICE_CERT). Here every way a PEM input can
fail to load is a ValueError."""

from __future__ import annotations

from cryptography import x509


def load_pem_certificates(data: bytes) -> list[x509.Certificate]:
    """Every certificate of a PEM bundle (at least one), or ValueError."""
    try:
        return x509.load_pem_x509_certificates(data)
    except x509.InvalidVersion as e:
        raise ValueError(f"not a valid X.509 certificate: {e}") from e


def load_pem_certificate(data: bytes) -> x509.Certificate:
    """The first certificate of a PEM input, or ValueError."""
    try:
        return x509.load_pem_x509_certificate(data)
    except x509.InvalidVersion as e:
        raise ValueError(f"not a valid X.509 certificate: {e}") from e
