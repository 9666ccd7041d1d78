"""Runs one in-process target under atheris (libFuzzer, coverage of the product's packages):

    .venv/bin/python -m tests.fuzz.run_atheris TARGET [libFuzzer flags] [corpus dirs]

e.g. `-runs=100000 -seed=1 -timeout=10 /tmp/new tests/fuzz/corpus/TARGET`. libFuzzer writes new
inputs into the first corpus directory and a crashing input to `-artifact_prefix`; it exits
non-zero on a crash (an exception the target lets escape), a timeout or an out-of-memory.
With `-runs=0` and files instead of directories, it replays those inputs once each.
"""

from __future__ import annotations

import importlib
import os
import subprocess
import sys
import tempfile

import atheris

from tests.fuzz.registry import PRODUCT, TARGETS


def main() -> None:
    if len(sys.argv) < 2 or sys.argv[1] not in TARGETS:
        sys.exit(f"usage: run_atheris TARGET [libFuzzer args]; targets: {', '.join(sorted(TARGETS))}")
    if "CML_FUZZ_SCRATCH" not in os.environ:
        # libFuzzer ends the process without running Python's exit handlers: the fuzzing runs
        # in a child, and this process removes the files its targets wrote.
        with tempfile.TemporaryDirectory(prefix="cml-fuzz-scratch-") as tmp:
            rc = subprocess.call([sys.executable, "-m", "tests.fuzz.run_atheris", *sys.argv[1:]],
                                 env={**os.environ, "CML_FUZZ_SCRATCH": tmp})
        sys.exit(rc)
    target = TARGETS[sys.argv[1]]
    with atheris.instrument_imports(include=PRODUCT):
        module = importlib.import_module(target.module)
    fn = getattr(module, target.function)
    atheris.Setup([sys.argv[0], *sys.argv[2:]], fn)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
