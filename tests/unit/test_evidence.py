"""The evidence report (scripts/evidence): the requirement rows cover the certification seed, the
JUnit results are matched to the tests pytest really reported, and the report orders, flags and
escapes what it shows."""

from __future__ import annotations

import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from scripts.evidence import junit, render, report, requirements

pytestmark = pytest.mark.unit

REPO = Path(__file__).resolve().parents[2]
# The seed lives in the project's shared folder: beside the clone in CI, under /work on a developer's machine.
SEED_PLACES = (REPO.parent / "shared" / "reference" / "certification-seed.md",
               Path("/work/shared/reference/certification-seed.md"))
SEED_STATE = {"done": "done", "partially done": "partly", "planned": "planned"}


def seed_rows(text: str) -> list[tuple[str, str]]:
    """(id, state) of every requirement row of the seed's tables, in order, named as
    requirements.toml names them."""
    rows: list[tuple[str, str]] = []
    for line in text.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) < 3 or set(cells[0]) <= set("-: "):
            continue
        first, state = cells[0], cells[-1].lower()
        if m := re.match(r"\*\*CML ([A-Za-z ]+)\.\*\*", first):
            rid = f"TSF {m[1]}"
        elif m := re.match(r"((?:COM|IAM|OS|APS) \d+|(?:CR|NDR) \d+\.\d+(?: \(\d+\))?)", first):
            rid = m[1] + (" DRTM" if "DRTM" in cells[1] else "")
        else:
            continue
        rows.append((rid, SEED_STATE[state]))
    return rows


def test_requirements_load_and_name_existing_files() -> None:
    rows = requirements.load(repo=REPO)
    assert len(rows) == len({r.id for r in rows}) == 89


def test_requirements_cover_every_row_of_the_seed() -> None:
    seed = next((p for p in SEED_PLACES if p.exists()), None)
    if seed is None:
        pytest.skip(f"no certification seed at {' or '.join(map(str, SEED_PLACES))}")
    expected = seed_rows(seed.read_text())
    assert len(expected) == 89
    assert [(r.id, r.seed_state) for r in requirements.load()] == expected


@pytest.mark.parametrize(("toml", "why"), [
    ('[[req]]\nid = "X"\ntable = "t"\ntitle = "t"\nseed_state = "done"\nstate = "maybe"\nmodules = []\nnote = ""',
     "state 'maybe'"),
    ('[[req]]\nid = "X"\ntable = "t"\ntitle = "t"\nseed_state = "done"\nstate = "done"\nmodules = []\nnote = ""',
     "names the files"),
    ('[[req]]\nid = "X"\ntable = "t"\ntitle = "t"\nseed_state = "done"\nstate = "done"\nmodules = ["nope.py"]\n'
     'note = ""', "no such file"),
    ('[[req]]\nid = "X"\ntable = "t"\ntitle = "t"\nseed_state = "done"\nstate = "partly"\nmodules = ["cmld"]\n'
     'note = ""', "what is missing"),
    ('[[req]]\nid = "X"\ntable = "t"\ntitle = "t"\nseed_state = "x"\nstate = "not"\nmodules = []\nnote = ""',
     "seed_state"),
    ("[[req]]\nid = 3", "'id' must be a string"),
    ("nothing = 1", "no [[req]]"),
    ("[[req", "Expected"),
])
def test_bad_requirements_are_refused_with_the_reason(tmp_path: Path, toml: str, why: str) -> None:
    path = tmp_path / "r.toml"
    path.write_text(toml)
    with pytest.raises(requirements.RequirementsError, match=re.escape(why)):
        requirements.load(path, repo=REPO)


SAMPLE_TESTS = '''
import pytest

def test_ok():
    pass

def test_broken():
    assert False

@pytest.mark.parametrize("v", ["a b", "x[1]", "c::d"])
def test_param(v):
    pass

@pytest.mark.xfail(strict=True, reason="open hole")
def test_hole():
    assert False

@pytest.mark.skip(reason="not here")
def test_skipped():
    pass

class TestGroup:
    def test_inside(self):
        pass

@pytest.fixture
def boom():
    raise RuntimeError("setup")

def test_setup_error(boom):
    pass
'''


def test_junit_outcomes_are_matched_to_pytests_own_node_ids(tmp_path: Path) -> None:
    """A real pytest run writes the XML; every node id it collected maps to its real outcome."""
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "test_sample.py").write_text(textwrap.dedent(SAMPLE_TESTS))
    xml = tmp_path / "junit.xml"
    base = [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-p", "no:xdist", "--rootdir", str(tmp_path),
            "-o", "addopts=", "-c", "/dev/null"]
    listed = subprocess.run([*base, "--collect-only", "-q", "sub"], cwd=tmp_path, capture_output=True, text=True,
                            check=False)
    nodeids = [line for line in listed.stdout.splitlines() if "::" in line]
    assert len(nodeids) == 9, listed.stdout
    subprocess.run([*base, f"--junitxml={xml}", "sub"], cwd=tmp_path, capture_output=True, check=False)
    run = junit.read(xml)
    outcomes = {n.split("::", 1)[1]: run.outcome(n) for n in nodeids}
    assert outcomes == {
        "test_ok": "passed", "test_broken": "failed", "test_param[a b]": "passed", "test_param[x[1]]": "passed",
        "test_param[c::d]": "passed", "test_hole": "xfailed", "test_skipped": "skipped",
        "TestGroup::test_inside": "passed", "test_setup_error": "failed",
    }
    assert run.outcome("sub/test_sample.py::test_missing") == junit.NOT_RUN


@pytest.mark.parametrize("content", [b"", b"<html/>", b"<testsuites><x/></testsuites>", b"\xff\xfe<"])
def test_unreadable_junit_is_refused(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "j.xml"
    path.write_bytes(content)
    with pytest.raises(junit.JunitError):
        junit.read(path)


def req(rid: str, state: str, seed: str = "done") -> requirements.Requirement:
    return requirements.Requirement(rid, "table", f"title of {rid}", seed, state, ("cmld",) if state != "not" else (),
                                    "note")


def last_run(outcomes: dict[str, str]) -> junit.LastRun:
    return junit.LastRun(Path("j.xml"), "now", {junit.junit_key(k): v for k, v in outcomes.items()})


def test_rows_without_a_passing_test_come_first_in_file_order() -> None:
    reqs = [req("A", "done"), req("B", "done"), req("C", "not"), req("D", "partly")]
    marks = {"t.py::a": ("A",), "t.py::b": ("B",), "t.py::d": ("D", "A")}
    run = last_run({"t.py::a": "passed", "t.py::b": "failed", "t.py::d": "xfailed"})
    rows = report.build(reqs, marks, run)
    assert [r.req.id for r in rows] == ["B", "C", "D", "A"]
    assert rows[0].verdict == "0/1 passed, 1 failed"
    assert rows[2].verdict == "0/1 passed, 1 open (strict xfail)"
    assert rows[3].verdict == "1/2 passed, 1 open (strict xfail)"
    assert report.run_problems(rows) == ["B: declared done, but none of its tests passed in the last run "
                                         "(0/1 passed, 1 failed)"]


def test_marker_problems_name_unknown_ids_and_unproven_claims() -> None:
    reqs = [req("A", "done"), req("B", "partly"), req("C", "not")]
    problems = report.marker_problems(reqs, {"t.py::x": ("A", "Z"), "t.py::y": ("C",)})
    assert problems == [
        "t.py::x: unknown requirement 'Z' (see scripts/evidence/requirements.toml)",
        "B: declared partly, but no test carries @pytest.mark.req('B')",
        "C: declared not, but 1 test(s) carry its marker",
    ]


def test_without_a_run_every_test_is_not_run() -> None:
    rows = report.build([req("A", "done")], {"t.py::a": ("A",)}, None)
    assert rows[0].verdict == "0/1 passed, 1 not run"


def test_rendering_escapes_and_keeps_one_row_per_requirement() -> None:
    hostile = requirements.Requirement("X <1>", "t|able", "a | b <script>", "planned", "done", ("cmld",), "n\nm")
    rows = report.build([hostile, req("B", "not")], {"t.py::x[<b>]": ("X <1>",)},
                        last_run({"t.py::x[<b>]": "passed"}))
    head = render.Header("abc", "today", "junit.xml")
    md = render.markdown(rows, head)
    table = [line for line in md.splitlines() if line.startswith("| **")]
    assert len(table) == 2 and "a \\| b" in md and "t\\|able" in md and "n m" in md
    assert "done (original: planned)" in md
    page = render.html_page(rows, head)
    assert "<script>" not in page and "&lt;script&gt;" in page and "x[&lt;b&gt;]" in page
    assert page.count("<tr id=") == 2
