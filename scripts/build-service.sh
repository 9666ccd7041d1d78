#!/usr/bin/env bash
# Builds the in-container service `cservice` (service/cservice.c) as a static binary: it must run
# in any GuestOS (busybox-only, glibc, musl, or no libc at all), so it needs nothing from the guest.
# Usage: scripts/build-service.sh [OUT]   (default build/cservice); rebuilds only when the source
# or this script is newer than OUT, and prints the path of the binary.
set -euo pipefail
top=$(cd "$(dirname "$0")/.." && pwd)
src="$top/service/cservice.c"
out="${1:-$top/build/cservice}"

if [ ! -e "$out" ] || [ "$src" -nt "$out" ] || [ "${BASH_SOURCE[0]}" -nt "$out" ]; then
    mkdir -p "$(dirname "$out")"
    tmp="$out.tmp.$$"
    trap 'rm -f "$tmp"' EXIT
    # static-pie: self-contained and still randomised; no NSS or dlopen is used (no warnings).
    gcc -static-pie -Os -s -Wall -Wextra -Wshadow -Wformat=2 -Werror -std=gnu11 -D_FORTIFY_SOURCE=2 \
        -fstack-protector-strong -o "$tmp" "$src"
    mv -f "$tmp" "$out"   # atomic: concurrent builds never see a half-written binary
fi
echo "$out"
