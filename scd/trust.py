"""Trust anchors, tried in the original's order (inventory §2.7): the software-signing root
(`tokens/ssig_rootca.cert`), every registered CA (`tokens/ca/*`, REGISTER_NEWCA), then the local
CA (`tokens/localca_rootca.cert`), whose success yields LOCALLY_SIGNED instead of GOOD.

Anchors are re-read for every verification, so a CA that cmld registers is used at once and a
broken anchor file only disables itself (with a log line), not the others.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509

from cml_common.certs import load_pem_certificates
from cml_common.paths import Layout

log = logging.getLogger(__name__)
MAX_ANCHOR = 256 * 1024


@dataclass(frozen=True)
class Anchor:
    name: str
    certs: list[x509.Certificate]
    local: bool


def _load(path: Path, local: bool) -> Anchor | None:
    try:
        data = path.read_bytes()
        if len(data) > MAX_ANCHOR:
            raise ValueError(f"{len(data)} bytes is too large for a certificate")
        certs = load_pem_certificates(data)
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as e:
        log.warning("trust anchor %s unusable: %s", path, e)
        return None
    return Anchor(str(path), certs, local)


def load_anchors(layout: Layout) -> list[Anchor]:
    anchors: list[Anchor] = []
    ssig = _load(layout.tokens / "ssig_rootca.cert", local=False)
    if ssig:
        anchors.append(ssig)
    if layout.ca_dir.is_dir():
        for p in sorted(layout.ca_dir.iterdir()):
            if p.is_file() and not p.name.startswith("."):
                a = _load(p, local=False)
                if a:
                    anchors.append(a)
    local = _load(layout.localca_cert, local=True)
    if local:
        anchors.append(local)
    return anchors
