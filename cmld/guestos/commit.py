"""Putting a downloaded GuestOS in place so that a crash at any moment leaves the old version or
the new one, complete, and nothing else (`commit`). What a crash interrupted is finished or undone
when cmld loads the store (`recover`).

The images are downloaded into a staging directory `.<name>-<version>.<random>` next to the
store. The config, signature and certificate go into it too, as `.pending.conf`, `.pending.sig`
and `.pending.cert`. Then:

1. an installed directory of the same name and version moves aside to
   `.<name>-<version>.replaced-version`
   (one rename);
2. the staging directory becomes `<name>-<version>` (one rename). From here the new version is
   decided, and `recover` rolls forward;
3. the config files are written from the pending ones (the config last), and the pending files go;
4. the replaced directory goes.

`recover`:
- staging directories: removed (an unfinished download);
- `<name>-<version>/` holding `.pending.conf`: step 3 and 4 done now;
- a `.replaced-version` directory whose `<name>-<version>` exists: removed; one whose `<name>-<version>`
  is missing (a crash between 1 and 2): moved back.
"""

from __future__ import annotations

import logging
import re
import shutil
from pathlib import Path

from cml_common.crashpoints import crash_point
from cml_common.fsutil import fsync_dir, remove_quietly, stale_temp_files, write_atomic

log = logging.getLogger(__name__)
PENDING = (".pending.conf", ".pending.sig", ".pending.cert")
REPLACED = ".replaced-version"
_STAGING = re.compile(r"^\.(.+-\d+)\.[A-Za-z0-9_]{8}$")


def stage_config(staging: Path, raw: bytes, sig: bytes, cert: bytes) -> None:
    """The config files travel with the images until the commit."""
    for name, data in zip(PENDING, (raw, sig, cert), strict=True):
        if data or name == PENDING[0]:
            write_atomic(staging / name, data, mode=0o644)


def _finish(final_dir: Path, conf: Path) -> None:
    """Step 3: the config files from the pending ones, the config last; then the pending go."""
    raw, sig, cert = (final_dir / n for n in PENDING)
    for src, dst in ((sig, conf.with_suffix(".sig")), (cert, conf.with_suffix(".cert"))):
        if src.exists():
            write_atomic(dst, src.read_bytes(), mode=0o644)
        else:
            remove_quietly(dst)
    write_atomic(conf, raw.read_bytes(), mode=0o644)
    crash_point("install.config")
    remove_quietly(sig, cert, raw)
    fsync_dir(final_dir)


def commit(staging: Path, final_dir: Path, conf: Path) -> None:
    """Steps 1 to 4 for a complete, checked staging directory (holding the pending config)."""
    replaced = final_dir.with_name(f".{final_dir.name}{REPLACED}")
    if replaced.exists():
        shutil.rmtree(replaced)
    if final_dir.exists():
        final_dir.rename(replaced)
        crash_point("install.replaced")
    staging.rename(final_dir)
    fsync_dir(final_dir.parent)
    crash_point("install.swapped")
    _finish(final_dir, conf)
    shutil.rmtree(replaced, ignore_errors=True)


def recover(directory: Path) -> list[str]:
    """Finish or undo what an interrupted install left in the store; returns what was done."""
    done: list[str] = []
    if not directory.is_dir():
        return done
    for p in stale_temp_files(directory):
        p.unlink(missing_ok=True)
        done.append(f"removed {p.name} (a write cmld did not finish)")
    for p in sorted(directory.iterdir()):
        if p.is_dir() and _STAGING.match(p.name) and not p.name.endswith(REPLACED):
            shutil.rmtree(p, ignore_errors=True)
            done.append(f"removed {p.name} (a GuestOS download that did not finish)")
    for final_dir in sorted(d for d in directory.iterdir() if d.is_dir() and (d / PENDING[0]).exists()):
        _finish(final_dir, directory / f"{final_dir.name}.conf")
        done.append(f"completed the install of {final_dir.name}")
    for replaced in sorted(directory.glob(f".*{REPLACED}")):
        final_dir = directory / replaced.name[1:-len(REPLACED)]
        if final_dir.exists():
            shutil.rmtree(replaced, ignore_errors=True)
            done.append(f"removed {replaced.name} (replaced by a completed install)")
        else:
            replaced.rename(final_dir)
            done.append(f"restored {final_dir.name} (its replacement was not yet in place)")
    for line in done:
        log.warning("GuestOS store %s: %s", directory, line)
    return done
