"""Facts about the TPM and measured boot: the resource-managed device, PCRs 0-9 as the TPM reports
them, and the UEFI event log replayed both by our parser and by tpm2_eventlog."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from . import eventlog
from .common import must, sh

LOG = Path("/sys/kernel/security/tpm0/binary_bios_measurements")
PCR_LINE = re.compile(r"^\s*(\d+)\s*:\s*0x([0-9A-Fa-f]+)\s*$", re.MULTILINE)
ENV = "TPM2TOOLS_TCTI=device:/dev/tpmrm0"


def parse_pcrs(text: str) -> dict[str, str]:
    return {m.group(1): m.group(2).lower() for m in PCR_LINE.finditer(text)}


def check() -> dict[str, Any]:
    data: dict[str, Any] = {"tpmrm0": Path("/dev/tpmrm0").is_char_device(),
                            "tpm_version": Path("/sys/class/tpm/tpm0/tpm_version_major").read_text().strip()
                            if Path("/sys/class/tpm/tpm0/tpm_version_major").exists() else None}
    data["tpm_pcrs"] = parse_pcrs(must("env", ENV, "tpm2_pcrread", "sha256:0,1,2,3,4,5,6,7,8,9"))
    raw = LOG.read_bytes()
    own, n = eventlog.replay(raw)
    data["own_replay"] = {str(k): v for k, v in own.items()}
    data["events"] = n
    tool = sh("tpm2_eventlog", str(LOG))
    data["tpm2_eventlog_rc"] = tool.rc
    data["tpm2_eventlog_replay"] = parse_pcrs(tool.out.split("pcrs:", 1)[1]) if "pcrs:" in tool.out else {}
    data["event_types"] = sorted(set(re.findall(r"EventType: (EV_\w+)", tool.out)))
    ima = Path("/sys/kernel/security/ima/ascii_runtime_measurements")
    data["ima_measurements"] = len(ima.read_text().splitlines()) if ima.exists() else None
    return data
