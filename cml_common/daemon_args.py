"""Command-line options every daemon shares."""

from __future__ import annotations

import argparse
from pathlib import Path

from . import paths


def common_parser(prog: str, description: str, socket_default: Path) -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog=prog, description=description)
    ap.add_argument("--base-dir", type=Path, default=paths.DEFAULT_BASE_DIR,
                    help="data directory (default %(default)s; GyroidOS devices use /data/cml)")
    ap.add_argument("--socket", type=Path, default=socket_default, help="control socket (default %(default)s)")
    ap.add_argument("--log-dir", type=Path, default=paths.DEFAULT_LOG_DIR, help="default %(default)s")
    ap.add_argument("--foreground", "-F", action="store_true",
                    help="stay in the foreground (implied under systemd)")
    ap.add_argument("--pid-file", type=Path, help="write the daemon's PID here")
    ap.add_argument("--verbose", "-v", action="store_true")
    return ap
