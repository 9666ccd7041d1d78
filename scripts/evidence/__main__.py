"""`python -m scripts.evidence [--junit FILE] [--out DIR] [--check]`: write the evidence report.

Exit status: 0 when the report was written and consistent; 1 when the requirements file, the
markers or (with --check) the last run contradict a declared state: the report is still written,
and every contradiction is printed; 2 when nothing could be written (bad input files).
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

from . import collect, junit, render, report, requirements

REPO = Path(__file__).resolve().parents[2]


def _commit() -> str:
    r = subprocess.run(["git", "-C", str(REPO), "rev-parse", "--short=12", "HEAD"], capture_output=True,
                       text=True, check=False)
    return r.stdout.strip() if r.returncode == 0 else "unknown (not a git checkout)"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m scripts.evidence", description=__doc__.splitlines()[0])
    ap.add_argument("--junit", type=Path, default=REPO / "reports" / "junit.xml",
                    help="JUnit XML of the last pytest run (default reports/junit.xml)")
    ap.add_argument("--out", type=Path, default=REPO / "reports", help="where evidence.md/.html go (default reports/)")
    ap.add_argument("--requirements", type=Path, default=requirements.DEFAULT_FILE)
    ap.add_argument("--check", action="store_true",
                    help="also fail when a row declared done had no passing test in the last run (a full run)")
    args = ap.parse_args(argv)

    try:
        reqs = requirements.load(args.requirements, repo=REPO)
        marks = collect.collect(REPO)
        run = junit.read(args.junit) if args.junit.exists() else None
    except (requirements.RequirementsError, collect.CollectionError, junit.JunitError) as e:
        print(f"evidence: {e}", file=sys.stderr)
        return 2
    rows = report.build(reqs, marks, run)
    head = render.Header(_commit(), datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
                         f"{args.junit.name} of {run.timestamp or 'unknown time'}" if run else
                         f"no test run ({args.junit} does not exist)")
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "evidence.md").write_text(render.markdown(rows, head), encoding="utf-8")
    (args.out / "evidence.html").write_text(render.html_page(rows, head), encoding="utf-8")
    print(f"evidence: {args.out / 'evidence.md'}, {args.out / 'evidence.html'}")
    print(f"evidence: {render.summary(rows)}")

    problems = report.marker_problems(reqs, marks)
    if args.check:
        problems += report.run_problems(rows) if run else [f"--check needs a test run: {args.junit} does not exist"]
    for p in problems:
        print(f"evidence: {p}", file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
