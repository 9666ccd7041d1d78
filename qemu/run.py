#!/usr/bin/env python3
"""Boot the system-test image once and run guest checks: .venv/bin/python qemu/run.py [--checks ...]"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from cmlvm.cli import run_main

sys.exit(run_main())
