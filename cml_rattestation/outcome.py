"""The verdict of one attestation and what its checks share.

The original's checks come first, in its order (PCR values, nonce, quote signature, PCR digest,
IMA, containers; user docs §5), then what it skips: the device certificate chain, the binding of
the quoting key to that certificate, the quote's structure and PCR selection, freshness against
the last quote seen from the same key, the UEFI event log replayed to PCRs 0-7 and compared with a
reference policy, and the measured GuestOS images against signed GuestOS configs.

A check is PASS, FAIL or SKIP (nothing to check against: e.g. no golden PCR values configured).
The verdict is good only when nothing FAILs; `strict` also fails on SKIP.
"""

from __future__ import annotations

import datetime
from dataclasses import dataclass, field
from pathlib import Path

from cryptography import x509

from cml_common.messages.attestation_pb2 import ADVANCED, ALL, BASIC
from cml_common.messages.rattestation_config_pb2 import RAttestationConfig

from . import eventlog
from .freshness import FreshnessStore

PASS, FAIL, SKIP = "PASS", "FAIL", "SKIP"


@dataclass
class Check:
    name: str
    status: str
    detail: str

    def line(self) -> str:
        return f"{self.status} {self.name}: {self.detail}"


@dataclass
class Outcome:
    checks: list[Check] = field(default_factory=list)
    replay: eventlog.Replay | None = None
    device_uuid: str = ""

    def add(self, name: str, status: str, detail: str) -> None:
        self.checks.append(Check(name, status, detail))

    def ok(self, strict: bool = False) -> bool:
        bad = {FAIL, SKIP} if strict else {FAIL}
        return bool(self.checks) and not any(c.status in bad for c in self.checks)


def requested_pcrs(cfg: RAttestationConfig) -> list[int]:
    if cfg.atype == BASIC:
        return list(range(12))
    if cfg.atype == ALL:
        return list(range(24))
    if cfg.atype == ADVANCED:
        return [i for i in range(24) if cfg.pcrs & (1 << i)]
    return []


def parse_hex(text: str) -> bytes:
    t = text.strip()
    if t[:2] in ("0x", "0X"):
        t = t[2:]
    return bytes.fromhex(t)


def device_uuid(cert: x509.Certificate) -> str:
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return ""
    for uri in san.get_values_for_type(x509.UniformResourceIdentifier):
        if uri.upper().startswith("UUID:"):
            return uri[5:]
    return ""


@dataclass
class Context:
    cfg: RAttestationConfig
    base: Path  # directory of the config file: relative paths are resolved against it
    nonce: bytes
    freshness: FreshnessStore | None = None
    now: datetime.datetime | None = None

    def path(self, p: str) -> Path:
        q = Path(p)
        return q if q.is_absolute() else self.base / q
