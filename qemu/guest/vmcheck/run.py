"""Guest-side runner, started by cml-vmtest.service: runs the checks the host's scenario.json
names, each collecting facts (the host asserts on them), and writes results.json to the share
after every check, so even a hang leaves the earlier results. Progress goes to the console.

A scenario may go on after reboots: `{"checks": [...], "after_reboot": [[...], ...]}`. After the
last check of a boot the runner reboots the guest into the next list (the reboot ends QEMU,
which the host starts again on the same disks and TPM state: a power cycle), and powers it off
after the last one. A check that reboots the guest itself
(`REBOOTS = True` in its module, e.g. DESTROY_SYSTEM) leaves its facts in `<share>/<name>.json`
first; an unexpected reboot is recorded as a failure of the check it hit, and ends the scenario.
A check is a module's `check()`, or `module.function` for one of several checks a module holds
(e.g. `abupdate.slot_a`, one per boot of the A/B update scenario)."""

from __future__ import annotations

import importlib
import json
import os
import subprocess
import sys
import time
import traceback
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from vmcheck import common
from vmcheck.common import CheckFailed


def write(share: Path, results: dict[str, Any]) -> None:
    tmp = share / "results.json.tmp"
    tmp.write_text(json.dumps(results, indent=1))
    os.replace(tmp, share / "results.json")


def uptime() -> float:
    return float(Path("/proc/uptime").read_text().split()[0])


def resume(share: Path, results: dict[str, Any]) -> bool:
    """After a reboot: settle the check the reboot interrupted; False if it was not expected."""
    for name, entry in results["checks"].items():
        if not entry.get("running"):
            continue
        del entry["running"]
        side = share / f"{name}.json"
        if entry.get("expects_reboot") and side.exists():
            entry.update({"ok": True, "data": json.loads(side.read_text())})
        else:
            entry.update({"ok": False, "error": "the guest rebooted during this check", "data": {}})
            return False
    return True


def run_check(name: str, results: dict[str, Any], share: Path) -> None:
    print(f"CML-CHECK {name}: start", flush=True)
    t0 = time.monotonic()
    entry: dict[str, Any] = {"running": True, "boot": results["boot"]}
    results["checks"][name] = entry
    try:
        mod_name, _, func = name.partition(".")
        mod = importlib.import_module(f"vmcheck.{mod_name}")
        entry["expects_reboot"] = bool(getattr(mod, "REBOOTS", False))
        write(share, results)
        entry.update({"ok": True, "data": getattr(mod, func or "check")()})
    except CheckFailed as e:
        entry.update({"ok": False, "error": str(e), "data": e.data})
    except Exception as e:
        entry.update({"ok": False, "error": f"{type(e).__name__}: {e}\n{traceback.format_exc()}", "data": {}})
    entry.pop("running", None)
    entry["seconds"] = round(time.monotonic() - t0, 2)
    print(f"CML-CHECK {name}: {'ok' if entry['ok'] else 'FAILED ' + entry['error'][:500]} "
          f"({entry['seconds']} s)", flush=True)
    results["uptime_at_end"] = uptime()
    write(share, results)


def main(share: Path) -> int:
    common.SHARE = share
    scenario = json.loads((share / "scenario.json").read_text())
    boots: list[list[str]] = [scenario["checks"], *scenario.get("after_reboot", [])]
    existing = share / "results.json"
    results: dict[str, Any]
    if existing.exists() and len(boots) > 1:
        results = json.loads(existing.read_text())
        results["boot"] += 1
        results.setdefault("boot_uptimes", []).append(uptime())
        if not resume(share, results) or results["boot"] >= len(boots):
            results["boot"] = len(boots)
            write(share, results)
            subprocess.run(["systemctl", "poweroff", "--no-block"], check=False)
            return 0
    else:
        results = {"uptime_at_start": uptime(), "checks": {}, "boot": 0}
    for name in boots[results["boot"]]:
        run_check(name, results, share)
    write(share, results)
    last = results["boot"] + 1 >= len(boots)
    print(f"CML-CHECK boot {results['boot']} done: {'power off' if last else 'reboot'}", flush=True)
    subprocess.run(["systemctl", "poweroff" if last else "reboot", "--no-block"], check=False)
    return 0


if __name__ == "__main__":
    sys.exit(main(Path(sys.argv[1])))
