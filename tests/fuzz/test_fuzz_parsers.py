"""Bounded coverage-guided runs of every in-process target (atheris, a fixed seed, a fixed number
of inputs from the checked-in corpus), and a replay of the whole corpus, reproducers of fixed
crashes included. Each run is its own process: libFuzzer exits on a crash."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tests.fuzz.registry import TARGETS

pytestmark = [pytest.mark.fuzz, pytest.mark.unit]
REPO = Path(__file__).resolve().parents[2]


def _atheris(name: str, *args: str, timeout: float = 240) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "tests.fuzz.run_atheris", name, *args], cwd=REPO,
                          capture_output=True, text=True, timeout=timeout, check=False)


@pytest.mark.parametrize("name", sorted(TARGETS))
def test_corpus_replays_cleanly(name: str) -> None:
    """Every seed and every kept reproducer runs through its target without an error."""
    files = sorted(str(p) for p in TARGETS[name].corpus.iterdir())
    assert files, f"no corpus for {name}"
    p = _atheris(name, "-runs=0", *files)
    assert p.returncode == 0, p.stderr[-4000:]


@pytest.mark.parametrize("name", sorted(TARGETS))
def test_bounded_fuzz_run(name: str, tmp_path: Path) -> None:
    t = TARGETS[name]
    new = tmp_path / "new"  # libFuzzer adds what it finds to the first directory, not the corpus
    new.mkdir()
    p = _atheris(name, f"-runs={t.ci_runs}", "-seed=1", "-timeout=20", "-rss_limit_mb=4096", "-max_total_time=60",
                 f"-artifact_prefix={tmp_path}/", str(new), str(t.corpus))
    found = [*tmp_path.glob("crash-*"), *tmp_path.glob("timeout-*"), *tmp_path.glob("oom-*")]
    assert p.returncode == 0 and not found, f"{name}: {[c.name for c in found]}\n{p.stderr[-4000:]}"
    assert "DONE" in p.stderr
