#!/usr/bin/env python3
"""Encrypted volumes and verity images, measured in the QEMU guest (the only place with
device-mapper here): boots the VM tier's image once with the `cryptbench` guest check and prints
each figure beside its reference from the same run, with the ratio.

    .venv/bin/python bench/crypt_volumes.py [--json FILE]

| figure | reference |
|---|---|
| start -> RUNNING, encrypted container (PIN, unwrap, dm stack) | the same container without a token (plain volume) |
| start -> RUNNING, GuestOS with dm-verity | the same GuestOS hashed in full before the start |
| first format (zero fill through the stack) | the same zero fill on a raw loop device |
| sequential write / read, integrity + crypt | the raw loop device of a same-size file |
| veritysetup open of the GuestOS image | SHA-256 of the whole image (cold cache) |

Under TCG (no KVM here) every figure is slow in absolute terms; the ratios are the point.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "qemu"))

from cmlvm import image, runner  # noqa: E402


def row(label: str, ours: float, ref_label: str, ref: float, unit: str) -> str:
    return f"{label:<46} {ours:9.2f} {unit:<5} {ref_label:<34} {ref:9.2f} {unit:<5} ratio {ours / ref:6.2f}"


def report(d: dict[str, float | list[float]]) -> list[str]:
    def med(k: str) -> float:
        v = d[k]
        return statistics.median(v) if isinstance(v, list) else float(v)

    return [
        row("start->RUNNING encrypted (median)", med("start_encrypted"), "plain, no token", med("start_plain"), "s"),
        row("start->RUNNING GuestOS with dm-verity", med("start_verity"), "hashed in full", med("start_plain"), "s"),
        row("first format, integrity+crypt", med("format_stack"), "zero fill, raw loop", med("format_raw"), "MiB/s"),
        row("sequential write, integrity+crypt", med("write_stack"), "raw loop device", med("write_raw"), "MiB/s"),
        row("sequential read, integrity+crypt", med("read_stack"), "raw loop device", med("read_raw"), "MiB/s"),
        row(f"veritysetup open ({int(med('image_bytes')) >> 20} MiB image)", med("verity_open"),
            "SHA-256 of the image", med("full_hash"), "s"),
    ]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--json", type=Path, help="also write the raw figures here")
    ap.add_argument("--timeout", type=float, default=3600)
    args = ap.parse_args()
    img = image.build()
    with tempfile.TemporaryDirectory(prefix="cml-bench-") as tmp:
        b = runner.boot(img, {"checks": ["cryptbench"]}, Path(tmp) / "console.log", timeout=args.timeout)
        if b.results is None or not b.results["checks"].get("cryptbench", {}).get("ok"):
            print(b.results["checks"]["cryptbench"].get("error") if b.results else b.console_tail(), file=sys.stderr)
            return 1
    data = b.results["checks"]["cryptbench"]["data"]
    print(f"guest: QEMU {b.accel}, 2 vCPUs; medians of {len(data['start_plain'])} starts; same run for every pair")
    print("\n".join(report(data)))
    if args.json:
        args.json.write_text(json.dumps(data, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
