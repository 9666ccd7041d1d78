"""Host side of the VM tier: builds the image, boots a scenario once, and turns the guest's
results into assertions whose messages carry the guest's own error text."""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[2]
ARTIFACTS = REPO / "qemu" / "artifacts"
sys.path.insert(0, str(REPO / "qemu"))

from cmlvm import bootdisk, image, runner  # noqa: E402
from cmlvm.image import Image  # noqa: E402
from cmlvm.runner import Boot  # noqa: E402

__all__ = ["Boot", "Image", "bootdisk", "runner"]

UNITS = ("cml-tpm2d.service", "cml-scd.service", "cmld.service")
TOOLS = ("qemu-system-x86_64", "qemu-img", "swtpm", "swtpm_setup", "mmdebstrap", "mke2fs", "cpio", "depmod")
# The A/B scenario's boot disk (qemu/cmlvm/bootdisk.py): a UKI and a GPT disk with a FAT ESP.
BOOT_DISK_TOOLS = ("objcopy", "objdump", "sfdisk", "mkfs.vfat", "mmd", "mcopy")
BOOT_TIMEOUT = 720.0  # one boot with a few checks on TCG, with room for a busy machine
# The system scenario: three boots (the second and third after reboots) with every check. All three
# took 778 s wall in a clean-clone CI run on 2026-12-07 (load about 2), but 2162 s earlier that day
# at load 6-11 (the pace of single checks varied by 1.5x with it): the bound leaves room for a
# busier machine, 5400 s.
SYSTEM_TIMEOUT = 5400.0
# Every VM test module sets `pytestmark = VM_MARKS`: one xdist group, so a single worker (under
# `--dist loadgroup`) builds and boots, and a timeout that covers a cold build plus the system boots.
VM_MARKS = [pytest.mark.vm, pytest.mark.xdist_group("vm"), pytest.mark.timeout(SYSTEM_TIMEOUT + 600)]


def missing_tools() -> list[str]:
    missing = [t for t in TOOLS if shutil.which(t) is None]
    missing += [str(p) for p in (runner.OVMF_CODE, runner.OVMF_VARS) if not p.exists()]
    return missing


def missing_boot_disk_tools() -> list[str]:
    missing = [t for t in BOOT_DISK_TOOLS if shutil.which(t) is None]
    if not bootdisk.STUB.exists():
        missing.append(str(bootdisk.STUB))
    return missing


def record_timing(name: str, seconds: float) -> None:
    """Keep the tier's timings next to the console logs (qemu/artifacts/timings.json)."""
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    f = ARTIFACTS / "timings.json"
    data = json.loads(f.read_text()) if f.exists() else {}
    data[name] = round(seconds, 1)
    f.write_text(json.dumps(data, indent=1) + "\n")


def build() -> Image:
    img = image.build()
    record_timing("image_build", img.timings["total"])
    return img


def boot(img: Image, name: str, checks: list[str], overlay: Path | None = None,
         forwards: dict[int, int] | None = None, agent: runner.Agent | None = None,
         extra_nics: tuple[runner.ExtraNic, ...] = (), after_reboot: list[list[str]] | None = None,
         timeout: float = BOOT_TIMEOUT, boot_disk: Path | None = None, extra_share: Path | None = None,
         reboots_first: int = 0, failed_boots: int = 0) -> Boot:
    """`after_reboot`: lists of checks for the boots that follow (the guest reboots in between);
    `reboots_first`: reboots the guest makes by itself before the first list (see runner.boot);
    `failed_boots`: boots between two lists that end before any check (a kernel that panics)."""
    scenario: dict[str, Any] = {"checks": checks}
    if after_reboot:
        scenario["after_reboot"] = after_reboot
    if reboots_first:
        scenario["reboots_first"] = reboots_first
    if failed_boots:
        scenario["failed_boots"] = failed_boots
    b = runner.boot(img, scenario, ARTIFACTS / f"console-{name}.log", overlay=overlay,
                    timeout=timeout, forwards=forwards, agent=agent, extra_nics=extra_nics,
                    boot_disk=boot_disk, extra_share=extra_share)
    record_timing(f"boot_{name}", b.seconds)
    if len(b.run_seconds) > 1:
        for i, s in enumerate(b.run_seconds, 1):
            record_timing(f"boot_{name}_run{i}", s)
    if b.results is not None:
        (ARTIFACTS / f"results-{name}.json").write_text(json.dumps(b.results, indent=1) + "\n")
    if agent is not None:
        (ARTIFACTS / f"agent-{name}.json").write_text(json.dumps({"result": b.agent_result,
                                                                 "error": b.agent_error}, indent=1) + "\n")
        record_timing(f"guest_uptime_{name}_checks_start", b.results["uptime_at_start"])
        cmld = b.results["checks"].get("units", {}).get("data", {}).get("units", {}).get("cmld.service", {})
        if int(cmld.get("ActiveEnterTimestampMonotonic", "0")):
            record_timing(f"guest_uptime_{name}_cmld_ready", int(cmld["ActiveEnterTimestampMonotonic"]) / 1e6)
    return b


def guest_check(b: Boot, name: str) -> dict[str, Any]:
    """The facts one guest check collected; fails with the guest's message if it could not."""
    why = "timed out" if b.timed_out else f"qemu exit status {b.qemu_status}"
    if b.results is not None and b.results.get("host_error"):
        why += f"; {b.results['host_error']}"
    if b.results is None:
        pytest.fail(f"the guest wrote no results ({why}); console {b.console_path}, tail:\n{b.console_tail()}")
    c = b.results["checks"].get(name)
    if c is None:
        pytest.fail(f"guest check {name} did not finish ({why}); console {b.console_path}, tail:\n{b.console_tail()}")
    if not c["ok"]:
        pytest.fail(f"guest check {name} failed in the guest: {c['error']}\nfacts: {json.dumps(c['data'])[:3000]}")
    data: dict[str, Any] = c["data"]
    return data


def assert_units_healthy(data: dict[str, Any]) -> None:
    """Every unit active/running and ready, none restarted; else the unit's status and journal."""
    problems = []
    for u in UNITS:
        p = data["units"][u]
        if (p.get("ActiveState"), p.get("SubState")) != ("active", "running") or p.get("NRestarts") != "0":
            problems.append(f"{u} is {p.get('ActiveState')}/{p.get('SubState')} (result {p.get('Result')}, "
                            f"restarts {p.get('NRestarts')}):\n{p.get('status', '')}\n--- journal ---\n"
                            f"{p.get('journal', '')}")
    assert not problems, "\n\n".join(problems)
