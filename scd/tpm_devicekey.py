"""The device key in the TPM (`tpm_enabled: true` in device.conf): scd's CSR and self-signed
certificate are signed by tpm2d's attestation key, which never leaves the TPM.

This is the original's TPM build (scd used `attestation_tss.pem` through OpenSSL's tpm2 provider)
in a workable Python form: scd holds no TPM library and no key material; it asks tpm2d over its
control socket for the public key (DEVICE_KEY_PUBLIC) and for signatures (DEVICE_KEY_SIGN, hashed
in the TPM and signed with the restricted key, RSASSA-PKCS1-v1_5/SHA-256). Because the device
certificate then names the attestation key, a verifier can check a quote against it.

`cryptography` cannot sign with a key it does not hold, so the to-be-signed structures are built
by its builders (with a throwaway RSA key, which fixes the signature algorithm to
sha256WithRSAEncryption) and then re-assembled around the TPM's signature: for a CSR the
subjectPublicKeyInfo is replaced by the TPM key's first. The result is parsed and its signature
checked before it is used.
"""

from __future__ import annotations

from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives.asymmetric.types import PublicKeyTypes

from cml_common.tpm2d_client import Tpm2dClient, Tpm2dError

from .devicekey import DeviceKey, DeviceKeyError

_throwaway: rsa.RSAPrivateKey | None = None


def _temp_key() -> rsa.RSAPrivateKey:
    global _throwaway  # noqa: PLW0603 (one throwaway key per process: only its algorithm matters)
    if _throwaway is None:
        _throwaway = rsa.generate_private_key(65537, 2048)
    return _throwaway


# --- minimal DER -------------------------------------------------------------------------------


def _tlv(data: bytes, off: int) -> tuple[int, int, int]:
    """(tag, start of value, end of value) of the TLV at `off`."""
    if off + 2 > len(data):
        raise DeviceKeyError("DER: truncated")
    tag, first = data[off], data[off + 1]
    pos = off + 2
    if first < 0x80:
        length = first
    else:
        n = first & 0x7F
        if n == 0 or n > 4 or pos + n > len(data):
            raise DeviceKeyError("DER: bad length")
        length = int.from_bytes(data[pos:pos + n], "big")
        pos += n
    if pos + length > len(data):
        raise DeviceKeyError("DER: value overruns")
    return tag, pos, pos + length


def _children(data: bytes, start: int, end: int) -> list[bytes]:
    out = []
    off = start
    while off < end:
        _, _, vend = _tlv(data, off)
        out.append(data[off:vend])
        off = vend
    return out


def _len(n: int) -> bytes:
    if n < 0x80:
        return bytes([n])
    b = n.to_bytes((n.bit_length() + 7) // 8, "big")
    return bytes([0x80 | len(b)]) + b


def _seq(*parts: bytes) -> bytes:
    body = b"".join(parts)
    return b"\x30" + _len(len(body)) + body


def _bitstring(sig: bytes) -> bytes:
    return b"\x03" + _len(len(sig) + 1) + b"\x00" + sig


def _split_signed(der: bytes) -> tuple[bytes, bytes]:
    """(to-be-signed, signatureAlgorithm) of a signed X.509 structure."""
    tag, start, end = _tlv(der, 0)
    parts = _children(der, start, end)
    if tag != 0x30 or len(parts) != 3:
        raise DeviceKeyError("DER: not a signed structure")
    return parts[0], parts[1]


class TpmDeviceKey(DeviceKey):
    def __init__(self, socket_path: Path) -> None:
        self.client = Tpm2dClient(socket_path)
        try:
            pem = self.client.device_key_public()
        except Tpm2dError as e:
            raise DeviceKeyError(f"TPM device key unavailable from tpm2d: {e}") from e
        key = serialization.load_pem_public_key(pem)
        if not isinstance(key, rsa.RSAPublicKey):
            raise DeviceKeyError("tpm2d's device key is not RSA")
        self._pub = key

    def public_key(self) -> PublicKeyTypes:
        return self._pub

    def sign_data(self, data: bytes) -> bytes:
        return self._sign(data)

    def _sign(self, data: bytes) -> bytes:
        try:
            return self.client.device_key_sign(data)
        except Tpm2dError as e:
            raise DeviceKeyError(f"the TPM did not sign: {e}") from e

    def sign_csr(self, builder: x509.CertificateSigningRequestBuilder) -> x509.CertificateSigningRequest:
        temp = builder.sign(_temp_key(), hashes.SHA256()).public_bytes(serialization.Encoding.DER)
        cri, alg = _split_signed(temp)
        _, start, end = _tlv(cri, 0)
        fields = _children(cri, start, end)  # version, subject, subjectPKInfo, [0] attributes
        if len(fields) != 4:
            raise DeviceKeyError("DER: unexpected CertificationRequestInfo")
        fields[2] = self._pub.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
        cri = _seq(*fields)
        csr = x509.load_der_x509_csr(_seq(cri, alg, _bitstring(self._sign(cri))))
        if not csr.is_signature_valid:
            raise DeviceKeyError("the CSR signed in the TPM does not verify")
        return csr

    def sign_certificate(self, builder: x509.CertificateBuilder) -> x509.Certificate:
        temp = builder.sign(_temp_key(), hashes.SHA256()).public_bytes(serialization.Encoding.DER)
        tbs, alg = _split_signed(temp)
        cert = x509.load_der_x509_certificate(_seq(tbs, alg, _bitstring(self._sign(tbs))))
        try:
            cert.verify_directly_issued_by(cert)
        except (ValueError, TypeError) as e:
            # Only self-signed certificates are made with the device key.
            raise DeviceKeyError(f"the certificate signed in the TPM does not verify: {e}") from e
        return cert
