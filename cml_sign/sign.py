"""Sign a container or GuestOS config: `<base>.sig` (raw signature) and `<base>.cert` (PEM chain,
signer first), where `<base>` is the config path without `.conf`, as `sign_config.sh` names them."""

from __future__ import annotations

from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from cml_common.fsutil import write_atomic

from .signer import Signer, SignError


def outputs(conf: Path) -> tuple[Path, Path]:
    base = conf.with_suffix("") if conf.suffix == ".conf" else conf
    return base.with_name(base.name + ".sig"), base.with_name(base.name + ".cert")


def load_chain(cert_files: list[Path]) -> bytes:
    """The certificate files concatenated as one PEM chain (each file may hold several)."""
    certs: list[x509.Certificate] = []
    for f in cert_files:
        try:
            certs.extend(x509.load_pem_x509_certificates(f.read_bytes()))
        except (OSError, ValueError) as e:
            raise SignError(f"cannot read certificate {f}: {e}") from e
    if not certs:
        raise SignError("no signer certificate given")
    return b"".join(c.public_bytes(serialization.Encoding.PEM) for c in certs)


def _pub(obj: object) -> bytes:
    return obj.public_bytes(serialization.Encoding.DER,  # type: ignore[attr-defined,no-any-return]
                            serialization.PublicFormat.SubjectPublicKeyInfo)


def sign_config(conf: Path, signer: Signer, cert_files: list[Path], pkcs1: bool = False) -> tuple[Path, Path]:
    try:
        data = conf.read_bytes()
    except OSError as e:
        raise SignError(f"cannot read {conf}: {e.strerror}") from e
    chain = load_chain(cert_files)
    sig = signer.sign(data, pkcs1=pkcs1)
    leaf = x509.load_pem_x509_certificates(chain)[0]
    key = getattr(signer, "key", None)
    if key is not None and _pub(key.public_key()) != _pub(leaf.public_key()):
        raise SignError(f"the first certificate ('{leaf.subject.rfc4514_string()}') is not for the signing key")
    sig_path, cert_path = outputs(conf)
    write_atomic(sig_path, sig, mode=0o644)
    write_atomic(cert_path, chain, mode=0o644)
    return sig_path, cert_path
