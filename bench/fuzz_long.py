"""The long fuzzing run: every in-process target under atheris (libFuzzer, coverage-guided) and
every daemon campaign against real daemons, then one table with inputs, inputs/s, coverage,
crashes and hangs per target. Needs root (it starts cmld with a container, scd, tpm2d on a swtpm).

    .venv/bin/python bench/fuzz_long.py                      # defaults: >= 10^6 inputs in total
    .venv/bin/python bench/fuzz_long.py --inprocess-runs 2000 --daemon-inputs 200   # a quick look

In-process targets run two at a time (2 cores), each from the checked-in corpus with new inputs
written to a temporary directory; a crash or a timeout (a hang: one input over --timeout s) is
written there too and the run reports it. Daemon campaigns check the daemon after every input
(its reply, or a probe on the same connection) and after every batch (a known-answer request on
a fresh connection, framing attacks, the process alive, no traceback in its log).
"""

from __future__ import annotations

import argparse
import random
import re
import shutil
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.benchlib import REPO, git
from tests.fuzz.registry import TARGETS


@dataclass
class Row:
    target: str
    inputs: int
    seconds: float
    coverage: str
    crashes: int
    hangs: int
    note: str = ""

    def line(self) -> str:
        rate = self.inputs / self.seconds if self.seconds else 0
        return (f"| {self.target} | {self.inputs} | {rate:.0f} | {self.coverage} | {self.crashes} | {self.hangs} | "
                f"{self.note} |")


def run_inprocess(name: str, runs: int, seed: int, timeout: int, out: Path) -> Row:
    t = TARGETS[name]
    new = out / "new" / name
    new.mkdir(parents=True, exist_ok=True)
    art = out / "artifacts"
    art.mkdir(exist_ok=True)
    cmd = [sys.executable, "-m", "tests.fuzz.run_atheris", name, f"-runs={runs}", f"-seed={seed}",
           f"-timeout={timeout}", "-rss_limit_mb=4096", "-print_final_stats=1", f"-artifact_prefix={art}/{name}-",
           str(new), str(t.corpus)]
    t0 = time.monotonic()
    p = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, check=False)
    secs = time.monotonic() - t0
    log = p.stdout + p.stderr
    (out / f"{name}.log").write_text(log)
    executed = re.search(r"stat::number_of_executed_units:\s*(\d+)", log)
    cov = re.findall(r"cov: (\d+) ft: (\d+)", log)
    crashes = len(list(art.glob(f"{name}-crash-*"))) + len(list(art.glob(f"{name}-oom-*")))
    hangs = len(list(art.glob(f"{name}-timeout-*")))
    note = "" if p.returncode == 0 else f"exit {p.returncode}"
    return Row(name, int(executed.group(1)) if executed else 0, secs,
               f"cov {cov[-1][0]}, ft {cov[-1][1]}" if cov else "?", crashes, hangs, note)


def run_daemons(inputs: int, seed: int, deadline_s: float) -> list[Row]:
    from tests.fuzz import daemon_targets as dt
    from tests.fuzz.daemons import Campaign, Finding

    rows: list[Row] = []

    def campaign(c: Campaign, n: int, batch: int) -> None:
        note = f"checked after every input; batch of {batch}: health probe, framing attacks"
        crashes = hangs = 0
        try:
            c.run(n, batch, deadline=time.monotonic() + deadline_s)
        except Finding as e:
            print(f"FINDING: {e}", flush=True)
            hangs += "hang" in e.what
            crashes += "hang" not in e.what
            note = f"FINDING: {e.what[:200]}"
        s = c.stats
        rows.append(Row(s.target, s.inputs, s.seconds,
                        f"{len(s.request_codes)} codes, {len(s.reply_kinds)} reply kinds", crashes, hangs, note))
        print(s.line(), flush=True)

    rng = random.Random(seed)
    with tempfile.TemporaryDirectory(prefix="cml-fuzz-") as tmp:
        base = Path(tmp)
        with dt.cmld_world(base / "idle", with_container=False) as w:
            campaign(dt.CmldControl(rng, w), inputs, 200)
            prov = dt.CmldControl(rng, w, provisioned_phase=True)
            prov.one(dt.C(command=dt.C.SET_PROVISIONED).SerializeToString())
            campaign(prov, inputs // 4, 200)
        with dt.cmld_world(base / "running", with_container=True) as w:
            campaign(dt.CmldControl(rng, w), inputs, 200)
            campaign(dt.CmldService(rng, w), inputs, 200)
        with dt.scd_world(base / "scd") as (d, err):
            campaign(dt.Scd(rng, d, err), inputs, 200)
        with dt.tpm2d_world(base / "tpm2d") as w:
            # the attestation server first: a fuzzed CLEAR on the control socket removes the key
            campaign(dt.Tpm2dRemote(rng, w), max(inputs // 10, 50), 50)
            campaign(dt.Tpm2dControl(rng, w), inputs, 200)
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--inprocess-runs", type=int, default=50000, help="inputs per in-process target")
    ap.add_argument("--daemon-inputs", type=int, default=3000, help="inputs per daemon campaign")
    ap.add_argument("--daemon-seconds", type=float, default=240, help="time bound per daemon campaign")
    ap.add_argument("--timeout", type=int, default=20, help="seconds for one in-process input (else: a hang)")
    ap.add_argument("--jobs", type=int, default=2)
    ap.add_argument("--seed", type=int, default=20261207)
    ap.add_argument("--targets", nargs="*", default=sorted(TARGETS))
    ap.add_argument("--no-daemons", action="store_true")
    ap.add_argument("--keep", type=Path, help="keep new inputs, logs and artifacts here")
    args = ap.parse_args()
    out = args.keep or Path(tempfile.mkdtemp(prefix="cml-fuzz-long-"))
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.monotonic()
    print(f"commit {git('rev-parse', '--short', 'HEAD') or '?'}{' (modified)' if git('status', '--porcelain') else ''}",
          flush=True)
    with ThreadPoolExecutor(args.jobs) as pool:
        futures = [pool.submit(run_inprocess, n, args.inprocess_runs, args.seed + i, args.timeout, out)
                   for i, n in enumerate(args.targets)]
        rows = []
        for f in futures:
            r = f.result()
            print(r.line(), flush=True)
            rows.append(r)
    if not args.no_daemons:
        rows += run_daemons(args.daemon_inputs, args.seed, args.daemon_seconds)
    total = sum(r.inputs for r in rows)
    print("\n| target | inputs | inputs/s | coverage | crashes | hangs | note |\n|---|---|---|---|---|---|---|")
    for r in rows:
        print(r.line())
    print(f"\ntotal: {total} inputs in {time.monotonic() - t0:.0f} s; crashes {sum(r.crashes for r in rows)}, "
          f"hangs {sum(r.hangs for r in rows)}; artifacts and logs in {out}")
    if args.keep is None:
        shutil.rmtree(out / "new", ignore_errors=True)
    sys.exit(1 if any(r.crashes or r.hangs or r.note.startswith(("exit", "FINDING")) for r in rows) else 0)


if __name__ == "__main__":
    main()
