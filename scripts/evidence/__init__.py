"""The certification evidence report: `python -m scripts.evidence`.

Evaluators check each requirement row of the certification seed (Common Criteria TSF, DIN SPEC
27070, IEC 62443-4-2) against code and a passing test. This tool joins three sources so that no
row's claim rests on prose alone:

- `requirements.toml`: every row, our state (done / partly / not), the files that implement it;
- the `@pytest.mark.req("<row>")` markers on the tests, found by pytest's own collection;
- the outcome of each of those tests in the last run (the JUnit XML `scripts/test.sh` writes).

It writes `reports/evidence.md` and `reports/evidence.html`, rows without a passing test first.
Map: `requirements.py` (the rows), `collect.py` (the markers), `junit.py` (the last run),
`report.py` (joining them, and what is inconsistent), `render.py` (Markdown and HTML),
`__main__.py` (the command).
"""
