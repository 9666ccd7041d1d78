"""Token types beyond the software token, added when their configuration allows."""

from __future__ import annotations

from pathlib import Path

from cml_common.paths import Layout

from ..tokenmgr import Factory


def optional_factories(layout: Layout, pkcs11_module: Path | None) -> dict[int, Factory]:
    return {}
