"""The reference policy for the UEFI event log (a JSON side file named by `event_log_policy`).

    {
      "description": "release 2026.1 on OVMF",
      "pcrs": {"0": "<64 hex>", ..., "7": "<64 hex>"},      # replayed values PCR 0-7 must have
      "secure_boot": false,                                  # SecureBoot variable in PCR 7
      "boot_applications": ["<64 hex>", ...]                  # allowed EFI applications (PCR 4)
    }

Every key is optional; a policy with none of them is refused as empty. `cml-rattestation
--make-policy FILE` writes one from a device whose evidence verified.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from .eventlog import EV_EFI_BOOT_SERVICES_APPLICATION, Replay

MAX_POLICY = 1024 * 1024


class PolicyError(ValueError):
    pass


@dataclass
class EventLogPolicy:
    pcrs: dict[int, bytes] = field(default_factory=dict)
    secure_boot: bool | None = None
    boot_applications: set[bytes] | None = None
    description: str = ""

    @classmethod
    def load(cls, path: Path) -> EventLogPolicy:
        try:
            raw = path.read_bytes()
            if len(raw) > MAX_POLICY:
                raise PolicyError(f"{path}: larger than 1 MiB")
            data = json.loads(raw)
        except (OSError, ValueError) as e:
            raise PolicyError(f"event log policy {path}: {e}") from e
        if not isinstance(data, dict):
            raise PolicyError(f"event log policy {path}: not a JSON object")
        unknown = set(data) - {"description", "pcrs", "secure_boot", "boot_applications"}
        if unknown:
            raise PolicyError(f"event log policy {path}: unknown keys {sorted(unknown)}")
        try:
            pol = cls(
                pcrs={int(k): bytes.fromhex(v) for k, v in data.get("pcrs", {}).items()},
                secure_boot=data.get("secure_boot"),
                boot_applications=({bytes.fromhex(h) for h in data["boot_applications"]}
                                   if "boot_applications" in data else None),
                description=str(data.get("description", "")))
        except (ValueError, TypeError, AttributeError) as e:
            raise PolicyError(f"event log policy {path}: {e}") from e
        if any(not 0 <= k < 24 or len(v) != 32 for k, v in pol.pcrs.items()):
            raise PolicyError(f"event log policy {path}: pcrs must map 0..23 to 32-byte hex values")
        if not pol.pcrs and pol.secure_boot is None and pol.boot_applications is None:
            raise PolicyError(f"event log policy {path}: empty (no pcrs, secure_boot or boot_applications)")
        return pol

    def check(self, rep: Replay) -> list[str]:
        problems = []
        for pcr, want in sorted(self.pcrs.items()):
            got = rep.pcrs.get(pcr, bytes(32))
            if got != want:
                problems.append(f"PCR {pcr} replays to {got.hex()}, the policy expects {want.hex()}")
        if self.secure_boot is not None:
            sb = rep.secure_boot()
            if sb is None:
                problems.append("the event log measures no SecureBoot variable")
            elif sb != self.secure_boot:
                problems.append(f"SecureBoot is {'on' if sb else 'off'}, the policy expects "
                                f"{'on' if self.secure_boot else 'off'}")
        if self.boot_applications is not None:
            for e in rep.events:
                if e.type == EV_EFI_BOOT_SERVICES_APPLICATION and e.sha256 not in self.boot_applications:
                    problems.append(f"event {e.index}: EFI application {e.sha256.hex()} is not allowed")
        return problems

    @staticmethod
    def from_replay(rep: Replay, description: str) -> dict[str, object]:
        out: dict[str, object] = {"description": description,
                                  "pcrs": {str(p): rep.pcrs.get(p, bytes(32)).hex() for p in range(8)},
                                  "boot_applications": sorted({e.sha256.hex() for e in rep.events
                                                               if e.type == EV_EFI_BOOT_SERVICES_APPLICATION})}
        sb = rep.secure_boot()
        if sb is not None:
            out["secure_boot"] = sb
        return out
