"""Content-addressed build cache: every artefact lives in a directory named after the hash of
its inputs, published by an atomic rename, so a rebuild with unchanged inputs is a lookup."""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import tempfile
import time
from collections.abc import Iterable, Iterator
from pathlib import Path

DEFAULT_CACHE = Path("/var/cache/cml-qemu")


def cache_root() -> Path:
    """$CML_QEMU_CACHE, else /var/cache/cml-qemu (outside the repository, shared by worktrees)."""
    return Path(os.environ.get("CML_QEMU_CACHE", str(DEFAULT_CACHE)))


def digest(*parts: str | bytes) -> str:
    """A short stable key of strings/bytes (length-prefixed, so parts cannot run into each other)."""
    h = hashlib.sha256()
    for p in parts:
        b = p.encode() if isinstance(p, str) else p
        h.update(len(b).to_bytes(8, "big"))
        h.update(b)
    return h.hexdigest()[:20]


def tree_digest(paths: Iterable[Path], base: Path) -> str:
    """Hash of the names and contents of every file under `paths` (caches and bytecode skipped)."""
    h = hashlib.sha256()
    files: list[Path] = []
    for p in paths:
        if p.is_file():
            files.append(p)
        elif p.is_dir():
            files.extend(f for f in p.rglob("*") if f.is_file() and "__pycache__" not in f.parts
                         and not f.name.endswith((".pyc", ".egg-info")) and ".egg-info" not in str(f))
    for f in sorted(files):
        h.update(str(f.relative_to(base)).encode() + b"\0")
        h.update(hashlib.sha256(f.read_bytes()).digest())
        h.update(b"x" if os.access(f, os.X_OK) else b"-")
    return h.hexdigest()[:20]


@contextlib.contextmanager
def publish(final: Path) -> Iterator[Path]:
    """Yield a scratch directory next to `final`; on success rename it to `final` (atomic), on
    failure remove it. A concurrent builder that lost the race just drops its copy."""
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.", dir=final.parent))
    try:
        yield tmp
        try:
            tmp.rename(final)
        except OSError:
            if not final.is_dir():
                raise
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


# An entry used within this time may back a boot that is still running (another checkout's run on
# the same machine: QEMU reopens the disk, kernel and initrd at every guest reboot); never pruned.
IN_USE_SECONDS = 6 * 3600


def hit(final: Path) -> Path:
    """Mark a cache entry as used now (its mtime), so a concurrent build's prune leaves it."""
    with contextlib.suppress(OSError):
        os.utime(final)
    return final


def prune(kind_dir: Path, keep: str, max_entries: int = 2) -> None:
    """Drop old entries of one kind (by mtime), keeping `keep`, the newest others and any
    used within IN_USE_SECONDS."""
    if not kind_dir.is_dir():
        return
    entries = sorted((e for e in kind_dir.iterdir() if e.is_dir() and not e.name.startswith(".") and e.name != keep),
                     key=lambda e: e.stat().st_mtime, reverse=True)
    now = time.time()
    for e in entries[max_entries - 1:]:
        if now - e.stat().st_mtime > IN_USE_SECONDS:
            shutil.rmtree(e, ignore_errors=True)
