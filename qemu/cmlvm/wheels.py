"""The suite as wheels for the guest: its dependencies (a wheelhouse, cached by the dependency
list) and the project itself (built from the working tree, cached by the source contents).

The guest is Debian 12 with the same /usr/bin/python3 (3.11) and the same shared libraries as the
host, so wheels built here (systemd-python, pyscard from sdists) run there unchanged.
"""

from __future__ import annotations

import shutil
import sys
import tempfile
import tomllib
from pathlib import Path

from . import cache
from .tools import run

REPO = Path(__file__).resolve().parents[2]
# Inputs of the project wheel: what setuptools packs (the packages, metadata, readme).
PACKAGES = ("cml_common", "cmld", "scd", "tpm2d", "cml_control", "cml_sign", "cml_tpm2_control", "cml_rattestation")
WHEEL_INPUTS = (*PACKAGES, "pyproject.toml", "README.md")


def pip() -> list[str]:
    """pip of the interpreter running us (the project venv, built from Debian's python3)."""
    return [sys.executable, "-m", "pip"]


def dependencies() -> list[str]:
    data = tomllib.loads((REPO / "pyproject.toml").read_text())
    deps: list[str] = data["project"]["dependencies"]
    return deps


def wheelhouse_key() -> str:
    return cache.digest("wheelhouse", sys.version, *dependencies())


def wheelhouse(root: Path | None = None) -> Path:
    """A directory of wheels for every runtime dependency (and theirs), built once per dep list."""
    final = (root or cache.cache_root()) / "wheelhouse" / wheelhouse_key()
    if not (final / ".complete").exists():
        with cache.publish(final) as tmp:
            run([*pip(), "wheel", "-q", "-w", tmp, *dependencies()], timeout=900)
            (tmp / ".complete").write_text("\n".join(dependencies()) + "\n")
    return final


def project_key() -> str:
    return cache.tree_digest([REPO / p for p in WHEEL_INPUTS], REPO)


def project_wheel(root: Path | None = None) -> Path:
    """The project's wheel built from the working tree (no deps), cached by its sources."""
    final = (root or cache.cache_root()) / "wheel" / project_key()
    found = sorted(final.glob("cml-*.whl")) if final.is_dir() else []
    if found:
        return found[0]
    # Built from a copy: setuptools writes build/ and *.egg-info into the source tree, which
    # would race with anything else building there (and leave litter in the working tree).
    with cache.publish(final) as tmp, tempfile.TemporaryDirectory(dir=tmp) as src:
        for p in WHEEL_INPUTS:
            if (REPO / p).is_dir():
                shutil.copytree(REPO / p, Path(src) / p, ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
            else:
                shutil.copy2(REPO / p, Path(src) / p)
        run([*pip(), "wheel", "-q", "--no-deps", "-w", tmp, src], timeout=600)
    cache.prune(final.parent, final.name, max_entries=3)
    found = sorted(final.glob("cml-*.whl"))
    if len(found) != 1:
        raise RuntimeError(f"pip wheel {REPO}: expected one cml-*.whl in {final}, got {found}")
    return found[0]
