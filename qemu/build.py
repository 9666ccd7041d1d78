#!/usr/bin/env python3
"""Build the system-test image (cached in $CML_QEMU_CACHE or /var/cache/cml-qemu): .venv/bin/python qemu/build.py"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from cmlvm.cli import build_main

sys.exit(build_main())
