"""Device identity (inventory §2.9, §4.6): UUID, key, CSR, self-signed certificate, device_id.conf.

At start, when `tokens/device.cert` is missing, scd creates the device key (`devicekey.py`), a
CSR (subject C/O/OU + CN "<DMI product name> <DMI serial>", SAN `URI:UUID:<fresh uuid>`, KU
digitalSignature/keyEncipherment/nonRepudiation, EKU clientAuth, SHA-256) and a self-signed
certificate from it. The original then exits and relies on a `/tmp/_provisioning_` marker; we
keep running and decide provisioning mode from the certificate itself: while `device.cert` is
self-signed (no CA-issued certificate pushed yet) scd is in provisioning mode. As in the
original, the mode is fixed for the life of the process, so a pushed certificate takes over at
the next start.
"""

from __future__ import annotations

import datetime
import logging
import uuid as uuidlib
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from cml_common.certs import load_pem_certificate, load_pem_certificates
from cml_common.fsutil import write_atomic
from cml_common.paths import Layout
from scd.errors import ScdError

from .devicekey import DeviceKey

log = logging.getLogger(__name__)
DMI = Path("/sys/devices/virtual/dmi/id")
SUBJECT_C, SUBJECT_O, SUBJECT_OU = "DE", "GyroidOS", "CML device"
PEM_BEGIN = b"-----BEGIN CERTIFICATE-----"
PEM_END = b"-----END CERTIFICATE-----"
MAX_CERT = 64 * 1024


class IdentityError(ScdError):
    pass


def _dmi(name: str, default: str, limit: int) -> str:
    try:
        value = (DMI / name).read_text().strip()
    except OSError:
        return default
    return value[:limit] or default


def device_uuid_of(cert: x509.Certificate) -> str | None:
    """The UUID from the `URI:UUID:<uuid>` subjectAltName."""
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return None
    for uri in san.get_values_for_type(x509.UniformResourceIdentifier):
        if uri.upper().startswith("UUID:"):
            return uri[5:]
    return None


def _pub_der(key: object) -> bytes:
    return key.public_bytes(serialization.Encoding.DER,  # type: ignore[attr-defined,no-any-return]
                            serialization.PublicFormat.SubjectPublicKeyInfo)


class DeviceIdentity:
    def __init__(self, layout: Layout, key: DeviceKey) -> None:
        self.layout = layout
        self.key = key
        self.cert_path = layout.tokens / "device.cert"
        self.csr_path = layout.tokens / "device.csr"
        self.id_path = layout.tokens / "device_id.conf"
        self.provisioning = False
        self.uuid = ""

    def setup(self) -> None:
        """Create what is missing, then fix the provisioning mode and write device_id.conf."""
        if not self.cert_path.exists():
            self._create()
        cert = self._read_cert()
        uid = device_uuid_of(cert)
        if not uid:
            raise IdentityError(f"{self.cert_path} has no URI:UUID: subjectAltName")
        self.uuid = uid
        self.provisioning = self._self_signed(cert)
        if not self.id_path.exists():
            write_atomic(self.id_path, f'uuid: "{uid}"\n'.encode(), mode=0o644)
        log.info("device %s, %s", uid, "provisioning mode (self-signed certificate)" if self.provisioning
                 else "provisioned certificate")

    def _read_cert(self) -> x509.Certificate:
        try:
            return load_pem_certificate(self.cert_path.read_bytes())
        except (OSError, ValueError) as e:
            raise IdentityError(f"{self.cert_path} unreadable: {e}") from e

    def _self_signed(self, cert: x509.Certificate) -> bool:
        return cert.issuer == cert.subject and _pub_der(cert.public_key()) == _pub_der(self.key.public_key())

    def _existing_uuid(self) -> str:
        """Keep a UUID cmld already knows (device_id.conf) when the certificate is re-created."""
        if self.id_path.exists():
            text = self.id_path.read_text()
            if '"' in text:
                candidate = text.split('"')[1]
                try:
                    return str(uuidlib.UUID(candidate))
                except ValueError:
                    pass
        return str(uuidlib.uuid4())

    def _create(self) -> None:
        uid = self._existing_uuid()
        cn = f"{_dmi('product_name', 'generic', 20)} {_dmi('product_serial', '0000', 40)}"
        subject = x509.Name([
            x509.NameAttribute(NameOID.COUNTRY_NAME, SUBJECT_C),
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, SUBJECT_O),
            x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, SUBJECT_OU),
            x509.NameAttribute(NameOID.COMMON_NAME, cn),
        ])
        ku = x509.KeyUsage(digital_signature=True, content_commitment=True, key_encipherment=True,
                           data_encipherment=False, key_agreement=False, key_cert_sign=False,
                           crl_sign=False, encipher_only=False, decipher_only=False)
        eku = x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH])
        san = x509.SubjectAlternativeName([x509.UniformResourceIdentifier(f"UUID:{uid}")])
        csr = self.key.sign_csr(
            x509.CertificateSigningRequestBuilder().subject_name(subject)
            .add_extension(ku, critical=True).add_extension(eku, critical=False)
            .add_extension(san, critical=False))
        now = datetime.datetime.now(datetime.UTC)
        cert = self.key.sign_certificate(
            x509.CertificateBuilder().subject_name(subject).issuer_name(subject)
            .public_key(csr.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=365))
            .add_extension(ku, critical=True).add_extension(eku, critical=False)
            .add_extension(san, critical=False))
        write_atomic(self.csr_path, csr.public_bytes(serialization.Encoding.PEM), mode=0o644)
        write_atomic(self.cert_path, cert.public_bytes(serialization.Encoding.PEM), mode=0o644)
        log.info("created device CSR and self-signed certificate for device %s", uid)

    # ------------------------------------------------------------ commands

    def csr(self) -> bytes:
        return self.csr_path.read_bytes()

    def install_certificate(self, pem: bytes) -> None:
        """PUSH_DEVICE_CERT: a PEM certificate for *our* key and *our* UUID, written atomically."""
        if len(pem) > MAX_CERT or not pem.lstrip().startswith(PEM_BEGIN) or PEM_END not in pem:
            raise IdentityError("not a PEM certificate (BEGIN/END CERTIFICATE markers missing)")
        try:
            certs = load_pem_certificates(pem)
        except ValueError as e:
            raise IdentityError(f"certificate does not parse: {e}") from e
        cert = certs[0]
        try:  # the key and extensions are parsed lazily (found by fuzzing PUSH_DEVICE_CERT)
            ours = _pub_der(cert.public_key()) == _pub_der(self.key.public_key())
            uid = device_uuid_of(cert)
        except (ValueError, UnsupportedAlgorithm) as e:
            raise IdentityError(f"certificate does not parse: {e}") from e
        if not ours:
            raise IdentityError("certificate is not for this device's key")
        if uid != self.uuid:
            raise IdentityError(f"certificate names device UUID {uid!r}, this device is {self.uuid}")
        write_atomic(self.cert_path, pem, mode=0o644)
