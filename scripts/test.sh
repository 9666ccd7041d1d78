#!/usr/bin/env bash
# The one test command: installs what the tests need, then runs the static checks and every test
# tier this machine supports. `.ci/run` calls exactly this.
set -euo pipefail
top=$(cd "$(dirname "$0")/.." && pwd)
cd "$top"
bash scripts/setup.sh
py="$top/.venv/bin/python"

echo "== generated protobuf code is fresh"
"$py" scripts/gen_proto.py --check
echo "== ruff"
"$top/.venv/bin/ruff" check cml_common cmld scd tpm2d cml_control cml_sign cml_tpm2_control cml_rattestation tests bench scripts qemu
echo "== mypy"
"$top/.venv/bin/mypy"
echo "== systemd units"
bash scripts/verify-units.sh
echo "== pytest (the VM tier runs on one xdist worker, its console logs land in qemu/artifacts/)"
"$py" -m pytest -n 2 --dist loadgroup -p no:cacheprovider "$@"
