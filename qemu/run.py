#!/usr/bin/env python3
"""Builds (if needed) and boots the system-test image once, runs guest checks and prints their
results as JSON. The serial console log is kept (default qemu/artifacts/console-manual.log).

    .venv/bin/python qemu/run.py [--checks units,tpm,cgroups,dm,container] [--overlay DIR]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from cmlvm import image, runner  # noqa: E402

HERE = Path(__file__).resolve().parent


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--checks", default="units,tpm,cgroups,dm,container", help="comma-separated guest checks")
    ap.add_argument("--overlay", type=Path, help="directory copied over the guest root before systemd starts")
    ap.add_argument("--console", type=Path, default=HERE / "artifacts" / "console-manual.log")
    ap.add_argument("--timeout", type=float, default=600)
    args = ap.parse_args()
    img = image.build()
    print("build: " + ", ".join(f"{k} {v:.1f} s" for k, v in img.timings.items()), file=sys.stderr)
    b = runner.boot(img, {"checks": args.checks.split(",")}, args.console, overlay=args.overlay,
                    timeout=args.timeout)
    print(f"boot: {b.seconds:.1f} s wall ({b.accel}), qemu exit {b.qemu_status}, timed out {b.timed_out}, "
          f"console {b.console_path}", file=sys.stderr)
    if b.results is None:
        print(b.console_tail(), file=sys.stderr)
        return 1
    print(json.dumps(b.results, indent=1))
    return 0 if all(c["ok"] for c in b.results["checks"].values()) else 1


if __name__ == "__main__":
    sys.exit(main())
