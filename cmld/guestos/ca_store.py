"""Trust anchors registered over the control socket (inventory §2.7).

REGISTER_NEWCA stores `tokens/ca/<sha1 hex of the PEM bytes>`; REGISTER_LOCALCA writes
`tokens/localca_rootca.cert` once. Beyond the original's PEM-marker check we require exactly one
parseable X.509 certificate that is a CA: a leaf registered as an anchor is always a mistake.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

from cryptography import x509

from cml_common.certs import load_pem_certificate
from cml_common.fsutil import write_atomic
from cmld.errors import CAError

BEGIN = b"-----BEGIN CERTIFICATE-----\n"
END = b"-----END CERTIFICATE-----\n"
MAX_CA_SIZE = 64 * 1024


def check_ca_pem(pem: bytes) -> x509.Certificate:
    if not pem:
        raise CAError("no certificate given")
    if len(pem) > MAX_CA_SIZE:
        raise CAError(f"certificate is {len(pem)} bytes, more than {MAX_CA_SIZE}")
    if not pem.startswith(BEGIN) or not pem.endswith(END):
        raise CAError("not a PEM certificate (BEGIN/END CERTIFICATE markers missing)")
    if pem.count(BEGIN) != 1:
        raise CAError("expected exactly one certificate")
    try:
        cert = load_pem_certificate(pem)
    except ValueError as e:
        raise CAError(f"certificate does not parse: {e}") from e
    try:
        bc = cert.extensions.get_extension_for_class(x509.BasicConstraints).value
    except x509.ExtensionNotFound as e:
        raise CAError("certificate has no basicConstraints extension; not a CA") from e
    except ValueError as e:
        raise CAError(f"certificate extensions do not parse: {e}") from e
    if not bc.ca:
        raise CAError("certificate is not a CA (basicConstraints CA:FALSE)")
    return cert


def register_ca(ca_dir: Path, pem: bytes) -> tuple[Path, bool]:
    """Store a CA; returns (path, newly_added). An existing identical file is success."""
    cert = check_ca_pem(pem)
    del cert
    path = ca_dir / hashlib.sha1(pem, usedforsecurity=False).hexdigest()
    if path.exists():
        return path, False
    ca_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    write_atomic(path, pem, mode=0o644)
    return path, True


def register_local_ca(path: Path, pem: bytes) -> None:
    check_ca_pem(pem)
    if path.exists():
        raise CAError(f"a local CA is already registered ({path})")
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    write_atomic(path, pem, mode=0o644)
