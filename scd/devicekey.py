"""The device key, behind a small interface so a TPM-backed key (tpm2d's attestation key) can be
plugged in later: scd only ever asks it for its public key and to sign a CSR or a certificate.

`FileDeviceKey` is the no-TPM case: `tokens/device.key`, PKCS#8 PEM, mode 0600, EC P-256
(the original used RSA-4096, whose generation takes seconds on small devices).
"""

from __future__ import annotations

import abc
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.asymmetric.types import PublicKeyTypes

from cml_common.fsutil import write_atomic
from scd.errors import ScdError


class DeviceKeyError(ScdError):
    pass


class DeviceKey(abc.ABC):
    @abc.abstractmethod
    def public_key(self) -> PublicKeyTypes: ...

    @abc.abstractmethod
    def sign_csr(self, builder: x509.CertificateSigningRequestBuilder) -> x509.CertificateSigningRequest: ...

    @abc.abstractmethod
    def sign_certificate(self, builder: x509.CertificateBuilder) -> x509.Certificate: ...

    @abc.abstractmethod
    def sign_data(self, data: bytes) -> bytes:
        """SHA-256 signature over `data` (ECDSA for EC keys, PKCS#1 v1.5 for RSA): cmld's audit
        checkpoints (CRYPTO_SIGN_DEVICE)."""


class FileDeviceKey(DeviceKey):
    def __init__(self, key: ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey) -> None:
        self._key = key

    @classmethod
    def load_or_create(cls, path: Path) -> FileDeviceKey:
        if path.exists():
            try:
                key = serialization.load_pem_private_key(path.read_bytes(), password=None)
            except (ValueError, TypeError, OSError) as e:
                # Never replace it: the certificate and attestation identity hang on this key.
                raise DeviceKeyError(f"device key {path} is unreadable or corrupt ({e}); left untouched") from e
            if not isinstance(key, ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey):
                raise DeviceKeyError(f"device key {path} is neither RSA nor EC")
            return cls(key)
        key = ec.generate_private_key(ec.SECP256R1())
        pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption())
        write_atomic(path, pem, mode=0o600)
        return cls(key)

    def public_key(self) -> PublicKeyTypes:
        return self._key.public_key()

    def sign_csr(self, builder: x509.CertificateSigningRequestBuilder) -> x509.CertificateSigningRequest:
        return builder.sign(self._key, hashes.SHA256())

    def sign_certificate(self, builder: x509.CertificateBuilder) -> x509.Certificate:
        return builder.sign(self._key, hashes.SHA256())

    def sign_data(self, data: bytes) -> bytes:
        if isinstance(self._key, ec.EllipticCurvePrivateKey):
            return self._key.sign(data, ec.ECDSA(hashes.SHA256()))
        return self._key.sign(data, padding.PKCS1v15(), hashes.SHA256())
