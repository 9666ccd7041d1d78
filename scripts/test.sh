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
echo "== yocto layer (oelint-adv)"
bash scripts/lint-yocto-layer.sh
echo "== systemd units"
bash scripts/verify-units.sh
echo "== pytest (the VM tier runs on one xdist worker, its console logs land in qemu/artifacts/)"
# reports/ (git-ignored) gets the JUnit XML of this run; a stale one must not stand in for it.
mkdir -p reports
rm -f reports/junit.xml
set +e
"$py" -m pytest -n 2 --dist loadgroup -p no:cacheprovider --junitxml reports/junit.xml "$@"
rc=$?
set -e
echo "== certification evidence (reports/evidence.md, reports/evidence.html)"
# Written after every run, a failing one too (it shows what failed). It cannot turn a red run
# green: pytest's status wins; a green run turns red when the evidence contradicts what
# scripts/evidence/requirements.toml declares (on a full run, --check: a done row with no
# passing test).
check=()
if [ $# -eq 0 ]; then check=(--check); fi
set +e
"$py" -m scripts.evidence "${check[@]}"
erc=$?
set -e
if [ "$rc" -ne 0 ]; then exit "$rc"; fi
exit "$erc"
