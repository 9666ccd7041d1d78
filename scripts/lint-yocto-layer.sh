#!/usr/bin/env bash
# Lints the Yocto layer (yocto-layer/) with oelint-adv against the release it declares
# (LAYERSERIES_COMPAT): every error and every warning fails. Infos (suggestions such as
# BBCLASSEXTEND or CVE_PRODUCT) do not; run oelint-adv without --hide to see them.
# oelint.vars.homepageping is the one rule left out: it fetches each HOMEPAGE over the network,
# which CI does not have; the HOMEPAGE values are checked by hand.
set -euo pipefail
top=$(cd "$(dirname "$0")/.." && pwd)
cd "$top"
release=$(sed -n 's/^LAYERSERIES_COMPAT_meta-cml = "\([a-z]*\)"$/\1/p' yocto-layer/conf/layer.conf)
if [ -z "$release" ]; then
    echo "lint-yocto-layer: no single release in LAYERSERIES_COMPAT_meta-cml (yocto-layer/conf/layer.conf)" >&2
    exit 1
fi
mapfile -t files < <(find yocto-layer -type f \( -name '*.bb' -o -name '*.bbappend' -o -name '*.inc' \
                                               -o -name '*.conf' \) | sort)
"$top/.venv/bin/oelint-adv" --quiet --hide info --release "$release" --suppress oelint.vars.homepageping \
    "${files[@]}"
echo "oelint-adv ($release): ${#files[@]} files, no error and no warning"
