#!/usr/bin/env bash
# Verify the systemd units offline: `systemd-analyze verify` must print nothing about them.
# Usage: scripts/verify-units.sh [UNIT_DIR]   (default: <repo>/systemd)
#
# verify checks that ExecStart binaries exist. The units name /usr/bin/<daemon> (where a system-wide
# install puts them); on the build machine they live in <repo>/.venv/bin. So the units are copied to
# a temporary directory with /usr/bin/ rewritten to the venv in Exec*= lines, and the copies are
# verified together (so their Wants=/Requires=/After= on each other resolve). The repo is untouched.
#
# --recursive-errors=one also resolves the units' direct dependencies ("no" silently skips a
# Requires= on a missing unit). Any output line that names one of our units or the temporary
# directory fails the check, even when verify exits 0 (e.g. "Failed to parse service type,
# ignoring"). Lines naming neither come from the host's own units pulled in as dependencies
# (basic.target ...): they are shown as notes and do not fail the check; a non-zero exit status
# with no such explanation does.
set -euo pipefail

top=$(cd "$(dirname "$0")/.." && pwd)
unit_dir=${1:-"$top/systemd"}
venv_bin="$top/.venv/bin"

if ! command -v systemd-analyze >/dev/null 2>&1; then
    echo "verify-units: systemd-analyze not found" >&2
    exit 2
fi
if [[ ! -d "$unit_dir" ]]; then
    echo "verify-units: no such directory: $unit_dir" >&2
    exit 2
fi

work=$(mktemp -d)
trap 'rm -rf -- "$work"' EXIT

shopt -s nullglob
units=()
for src in "$unit_dir"/*.service "$unit_dir"/*.target "$unit_dir"/*.socket; do
    name=$(basename -- "$src")
    sed -e "/^[[:space:]]*Exec/ s#/usr/bin/#$venv_bin/#g" -- "$src" >"$work/$name"
    units+=("$work/$name")
done
shopt -u nullglob
if [[ ${#units[@]} -eq 0 ]]; then
    echo "verify-units: no unit files in $unit_dir" >&2
    exit 1
fi

export LC_ALL=C SYSTEMD_LOG_COLOR=0 SYSTEMD_LOG_LOCATION=0 SYSTEMD_PAGER=cat
rc=0
output=$(systemd-analyze verify --man=no --recursive-errors=one "${units[@]}" 2>&1) || rc=$?

bad=()
notes=()
while IFS= read -r line; do
    [[ -z "$line" ]] && continue
    ours=0
    [[ "$line" == *"$work/"* ]] && ours=1
    for u in "${units[@]}"; do
        [[ "$line" == *"$(basename -- "$u")"* ]] && ours=1
    done
    if [[ $ours -eq 1 ]]; then
        bad+=("${line//$work\//}")
    else
        notes+=("$line")
    fi
done <<<"$output"

for line in "${notes[@]+"${notes[@]}"}"; do
    echo "verify-units: note (host unit, ignored): $line"
done
if [[ ${#bad[@]} -gt 0 || ( $rc -ne 0 && ${#notes[@]} -eq 0 ) ]]; then
    echo "systemd units FAILED verification (systemd-analyze exit status $rc):" >&2
    for line in "${bad[@]+"${bad[@]}"}"; do
        echo "  $line" >&2
    done
    exit 1
fi
echo "systemd units verify clean: ${#units[@]} units"

# Informational: the sandbox exposure score of the two confined daemons (cmld is a container
# manager and deliberately unconfined).
for name in cml-scd.service cml-tpm2d.service; do
    [[ -f "$work/$name" ]] || continue
    score=$(systemd-analyze security --offline=true --no-pager "$work/$name" 2>/dev/null \
        | grep -F "Overall exposure level" || true)
    echo "  ${score:-$name: no exposure score (systemd-analyze security --offline unsupported?)}"
done
