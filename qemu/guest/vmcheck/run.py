"""Guest-side runner, started by cml-vmtest.service: runs the checks the host's scenario.json
names, each collecting facts (the host asserts on them), and writes results.json to the share
after every check, so even a hang leaves the earlier results. Progress goes to the console."""

from __future__ import annotations

import importlib
import json
import os
import sys
import time
import traceback
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from vmcheck.common import CheckFailed


def write(share: Path, results: dict[str, Any]) -> None:
    tmp = share / "results.json.tmp"
    tmp.write_text(json.dumps(results, indent=1))
    os.replace(tmp, share / "results.json")


def main(share: Path) -> int:
    scenario = json.loads((share / "scenario.json").read_text())
    results: dict[str, Any] = {"uptime_at_start": float(Path("/proc/uptime").read_text().split()[0]), "checks": {}}
    for name in scenario["checks"]:
        print(f"CML-CHECK {name}: start", flush=True)
        t0 = time.monotonic()
        entry: dict[str, Any]
        try:
            mod = importlib.import_module(f"vmcheck.{name}")
            entry = {"ok": True, "data": mod.check()}
        except CheckFailed as e:
            entry = {"ok": False, "error": str(e), "data": e.data}
        except Exception as e:
            entry = {"ok": False, "error": f"{type(e).__name__}: {e}\n{traceback.format_exc()}", "data": {}}
        entry["seconds"] = round(time.monotonic() - t0, 2)
        results["checks"][name] = entry
        print(f"CML-CHECK {name}: {'ok' if entry['ok'] else 'FAILED ' + entry['error'][:500]} "
              f"({entry['seconds']} s)", flush=True)
        results["uptime_at_end"] = float(Path("/proc/uptime").read_text().split()[0])
        write(share, results)
    return 0


if __name__ == "__main__":
    sys.exit(main(Path(sys.argv[1])))
