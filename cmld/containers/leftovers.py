"""What an interrupted create, remove or first start leaves in the containers directory, swept
when cmld loads it.

Every write there is ordered so that a crash at any point leaves either the complete old state or
the complete new one, plus files that nothing refers to:

- a create writes `<uuid>.created` (and `.sig`, `.cert`) first and the config last. Without its
  config the container does not exist, and those files are an unfinished create;
- a remove deletes the config first. What remains (the other files, the key, `<uuid>/` with
  the images) belongs to no container and is an unfinished remove;
- `write_atomic` writes `.<name>.tmp<pid>` and renames it into place. A temp file was never
  renamed;
- the first start formats an EMPTY image as `<image>.img.tmp` and renames it when complete.

This module removes those files and nothing else. Every file of a container whose config exists
(even one that does not parse) stays. c0 is exempt: the implicit c0 has no config file and keeps
its data.
"""

from __future__ import annotations

import logging
import re
import shutil
from pathlib import Path

from cml_common.fsutil import stale_temp_files
from cml_common.paths import C0_UUID, Layout
from cmld.crypt import scrub

log = logging.getLogger(__name__)
_OWNED = re.compile(r"^([0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12})(\.created|\.sig|\.cert|\.uid|"
                    r"\.uid\.bad|-oci\.key|\.key|)$")


def sweep(layout: Layout) -> list[str]:
    """Remove the leftovers of interrupted creates, removes and formats; returns what went."""
    removed: list[str] = []

    def drop(p: Path, why: str) -> None:
        try:
            # An interrupted remove may have stopped before the key and the image headers were
            # zeroed: finish that first, the data must not stay recoverable from the disk.
            if p.is_dir() and not p.is_symlink():
                scrub.scrub_images(p)
                shutil.rmtree(p)
            elif p.name.endswith(".key"):
                scrub.destroy_key_file(p)
            else:
                p.unlink()
        except FileNotFoundError:
            return
        except OSError as e:
            log.error("cannot remove %s (%s): %s", p, why, e)
            return
        log.warning("removed %s: %s", p, why)
        removed.append(str(p))

    cdir = layout.containers
    if not cdir.is_dir():
        return removed
    configs = {p.stem for p in cdir.glob("*.conf")}
    for d in (cdir, layout.keys):
        for p in stale_temp_files(d):
            drop(p, "a write cmld did not finish")
    for d in (cdir, layout.keys):
        if not d.is_dir():
            continue
        for p in sorted(d.iterdir()):
            m = _OWNED.match(p.name)
            if m is None or m.group(1) in configs or m.group(1) == C0_UUID:
                continue
            if d == layout.keys and m.group(2) != ".key":
                continue
            drop(p, "its container has no config (an interrupted create or remove)")
    for img in sorted(cdir.glob("*/*.img.tmp")):
        drop(img, "an image whose formatting did not finish")
    return removed
