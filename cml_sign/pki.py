"""Development PKI in the shape of the original's `gen_dev_certs.sh` (user docs §4.1):

    ssig_rootca ─┬─ ssig_subca            (kernel/modules; UEFI db)
                 └─ ssig_subca_cml ── ssig_cml   (signs the CML and core GuestOS configs)
    gen_rootca  ─┬─ device_subca          (issues device certificates from CSRs)
                 └─ guestos_subca ── guestos     (customer GuestOS / container signing)

Every key is written as `<name>.key` (PKCS#8 PEM, 0600, unencrypted: development only) and every
certificate as `<name>.cert` (PEM), plus `<name>.chain` (the certificate followed by its
intermediates, what `sign --cert` expects). Existing files are never overwritten.
"""

from __future__ import annotations

import contextlib
import datetime
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from cml_common.fsutil import write_atomic

PrivateKey = rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey
KEY_TYPES = ("rsa2048", "rsa3072", "rsa4096", "ec256", "ec384")


@dataclass(frozen=True)
class Spec:
    name: str
    cn: str
    issuer: str | None  # None: self-signed root
    ca: bool
    path_len: int | None = None


SPECS = [
    Spec("ssig_rootca", "GyroidOS Software Signing Root CA", None, True),
    Spec("ssig_subca", "GyroidOS Software Signing Sub CA", "ssig_rootca", True, 0),
    Spec("ssig_subca_cml", "GyroidOS CML Signing Sub CA", "ssig_rootca", True, 0),
    Spec("ssig_cml", "GyroidOS CML Signing", "ssig_subca_cml", False),
    Spec("gen_rootca", "GyroidOS General Root CA", None, True),
    Spec("device_subca", "GyroidOS Device Sub CA", "gen_rootca", True, 0),
    Spec("guestos_subca", "GyroidOS GuestOS Signing Sub CA", "gen_rootca", True, 0),
    Spec("guestos", "GyroidOS GuestOS Signing", "guestos_subca", False),
]


class PkiError(Exception):
    pass


def new_key(kind: str) -> PrivateKey:
    if kind.startswith("rsa"):
        return rsa.generate_private_key(public_exponent=65537, key_size=int(kind[3:]))
    if kind == "ec256":
        return ec.generate_private_key(ec.SECP256R1())
    if kind == "ec384":
        return ec.generate_private_key(ec.SECP384R1())
    raise PkiError(f"unknown key type {kind!r} (one of {', '.join(KEY_TYPES)})")


def _name(cn: str, org: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COUNTRY_NAME, "DE"),
                      x509.NameAttribute(NameOID.ORGANIZATION_NAME, org),
                      x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def issue(subject: x509.Name, pub: object, issuer_name: x509.Name, issuer_key: PrivateKey, *, ca: bool,
          path_len: int | None = None, days: int = 3650, eku: list[x509.ObjectIdentifier] | None = None,
          not_before: datetime.datetime | None = None, extra: list[x509.ExtensionType] | None = None,
          ) -> x509.Certificate:
    start = not_before or datetime.datetime.now(datetime.UTC) - datetime.timedelta(minutes=5)
    ku = x509.KeyUsage(digital_signature=not ca, content_commitment=not ca, key_encipherment=False,
                       data_encipherment=False, key_agreement=False, key_cert_sign=ca, crl_sign=ca,
                       encipher_only=False, decipher_only=False)
    b = (x509.CertificateBuilder().subject_name(subject).issuer_name(issuer_name)
         .public_key(pub).serial_number(x509.random_serial_number())  # type: ignore[arg-type]
         .not_valid_before(start).not_valid_after(start + datetime.timedelta(days=days))
         .add_extension(x509.BasicConstraints(ca=ca, path_length=path_len if ca else None), critical=True)
         .add_extension(ku, critical=True)
         .add_extension(x509.SubjectKeyIdentifier.from_public_key(pub), critical=False))  # type: ignore[arg-type]
    if issuer_name != subject or pub is not issuer_key.public_key():
        b = b.add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer_key.public_key()),
                            critical=False)
    if eku:
        b = b.add_extension(x509.ExtendedKeyUsage(eku), critical=False)
    for ext in extra or []:
        b = b.add_extension(ext, critical=False)
    return b.sign(issuer_key, hashes.SHA256() if isinstance(issuer_key, rsa.RSAPrivateKey) else hashes.SHA384())


def key_pem(key: PrivateKey) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def cert_pem(*certs: x509.Certificate) -> bytes:
    return b"".join(c.public_bytes(serialization.Encoding.PEM) for c in certs)


def create_pki(out: Path, key_type: str = "rsa3072", org: str = "GyroidOS development PKI",
               days: int = 3650) -> list[Path]:
    """Create the hierarchy; refuses to overwrite an existing PKI."""
    out.mkdir(parents=True, exist_ok=True, mode=0o700)
    clash = [s.name for s in SPECS if (out / f"{s.name}.key").exists() or (out / f"{s.name}.cert").exists()]
    if clash:
        raise PkiError(f"{out} already holds {', '.join(clash)}; refusing to overwrite a PKI")
    keys: dict[str, PrivateKey] = {}
    certs: dict[str, x509.Certificate] = {}
    chains: dict[str, list[x509.Certificate]] = {}
    written: list[Path] = []
    for spec in SPECS:
        key = new_key(key_type)
        subject = _name(spec.cn, org)
        if spec.issuer is None:
            cert = issue(subject, key.public_key(), subject, key, ca=True, days=days)
            chains[spec.name] = [cert]
        else:
            eku = None if spec.ca else [ExtendedKeyUsageOID.CODE_SIGNING]
            cert = issue(subject, key.public_key(), certs[spec.issuer].subject, keys[spec.issuer],
                         ca=spec.ca, path_len=spec.path_len, days=days, eku=eku)
            chains[spec.name] = [cert, *chains[spec.issuer]]  # up to and including the root
        keys[spec.name], certs[spec.name] = key, cert
        for path, data, mode in ((out / f"{spec.name}.key", key_pem(key), 0o600),
                                 (out / f"{spec.name}.cert", cert_pem(cert), 0o644),
                                 # The chain a signer ships: itself and its intermediates, not the root.
                                 (out / f"{spec.name}.chain", cert_pem(*chains[spec.name][:-1] or [cert]), 0o644)):
            write_atomic(path, data, mode=mode)
            written.append(path)
    return written


def sign_csr(csr_pem: bytes, ca_key: PrivateKey, ca_cert: x509.Certificate, days: int = 3650) -> x509.Certificate:
    """Issue a device certificate for a device CSR (J8), keeping its subject and subjectAltName."""
    csr = x509.load_pem_x509_csr(csr_pem)
    if not csr.is_signature_valid:
        raise PkiError("the CSR's self-signature does not verify")
    extra: list[x509.ExtensionType] = []
    with contextlib.suppress(x509.ExtensionNotFound):
        extra.append(csr.extensions.get_extension_for_class(x509.SubjectAlternativeName).value)
    return issue(csr.subject, csr.public_key(), ca_cert.subject, ca_key, ca=False, days=days,
                 eku=[ExtendedKeyUsageOID.CLIENT_AUTH], extra=extra)
