"""An interrupted remove (config gone, the rest still there) is finished by the sweep at load, and
finished as a remove would have: the key files and the headers of the images are zeroed before
they are unlinked, so hard links (or the disk blocks) keep nothing readable."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from cml_common.paths import Layout
from cmld.containers import leftovers

pytestmark = pytest.mark.unit
UUID = "3f1c0a52-8d7e-4b5a-9c11-2a6f0e9d4b77"
KEEP = "9b2e4c71-1d3a-4f6b-8e20-5c7a9d1e3f48"
MIB = 1 << 20


def test_sweep_zeroes_keys_and_image_headers_of_an_interrupted_remove(tmp_path: Path) -> None:
    layout = Layout(tmp_path)
    for d in (layout.containers, layout.keys):
        d.mkdir(parents=True)
    cdir = layout.container_dir(UUID)
    cdir.mkdir()
    secret = os.urandom(96)
    files = {
        layout.container_key(UUID): secret,
        layout.containers / f"{UUID}-oci.key": secret,
        cdir / "data.img": os.urandom(2 * MIB),
        cdir / "data.meta.img": os.urandom(MIB // 2),
    }
    evidence = {}
    for i, (p, content) in enumerate(files.items()):
        p.write_bytes(content)
        evidence[p] = tmp_path / f"evidence-{i}"
        os.link(p, evidence[p])
    # a container whose config exists keeps everything
    (layout.containers / f"{KEEP}.conf").write_text("name: keep\n")
    layout.container_key(KEEP).write_bytes(secret)

    removed = leftovers.sweep(layout)

    assert all(not p.exists() for p in files) and not cdir.exists(), removed
    assert evidence[layout.container_key(UUID)].read_bytes() == bytes(96)
    assert evidence[layout.containers / f"{UUID}-oci.key"].read_bytes() == bytes(96)
    img = evidence[cdir / "data.img"].read_bytes()
    assert img[:MIB] == bytes(MIB) and img[MIB:] == files[cdir / "data.img"][MIB:]  # the header only
    assert evidence[cdir / "data.meta.img"].read_bytes() == bytes(MIB // 2)
    assert layout.container_key(KEEP).read_bytes() == secret
