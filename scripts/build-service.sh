#!/usr/bin/env bash
# Builds the in-container service (service/cml-service.c) as a static binary for busybox guests.
# Usage: scripts/build-service.sh [OUT]   (default build/cml-service); rebuilds only when the
# source or this script is newer than OUT, and prints the path of the binary.
set -euo pipefail
top=$(cd "$(dirname "$0")/.." && pwd)
src="$top/service/cml-service.c"
out="${1:-$top/build/cml-service}"

if [ ! -e "$out" ] || [ "$src" -nt "$out" ] || [ "${BASH_SOURCE[0]}" -nt "$out" ]; then
    mkdir -p "$(dirname "$out")"
    tmp="$out.tmp.$$"
    trap 'rm -f "$tmp"' EXIT
    gcc -static -Os -s -Wall -Wextra -std=gnu11 -o "$tmp" "$src"
    mv -f "$tmp" "$out"   # atomic: concurrent builds never see a half-written binary
fi
echo "$out"
