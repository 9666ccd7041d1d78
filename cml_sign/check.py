"""`cml-sign verify`: scd's own verification (same code, same anchor order), with the reason."""

from __future__ import annotations

from pathlib import Path

from cryptography import x509

from cml_common.messages.scd_pb2 import HashAlgo
from cml_common.paths import Layout
from scd.trust import Anchor, load_anchors
from scd.verify import Result, verify


def anchors_from(base: Path | None, roots: list[Path], local_ca: Path | None) -> list[Anchor]:
    """Explicit --root files (tried in order), then --local-ca; or a device base dir's anchors."""
    anchors = [Anchor(str(p), x509.load_pem_x509_certificates(p.read_bytes()), local=False) for p in roots]
    if local_ca:
        anchors.append(Anchor(str(local_ca), x509.load_pem_x509_certificates(local_ca.read_bytes()), local=True))
    if base is not None:
        anchors.extend(load_anchors(Layout(base)))
    return anchors


def check(conf: Path, sig: Path, cert: Path, anchors: list[Anchor], check_time: bool = True) -> Result:
    return verify(conf.read_bytes(), sig.read_bytes(), cert.read_bytes(), HashAlgo.SHA512, anchors, check_time)
