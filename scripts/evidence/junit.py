"""The outcome of each test in the last run, from the JUnit XML pytest wrote (`--junitxml`)."""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path

PASSED, FAILED, SKIPPED, XFAILED, NOT_RUN = "passed", "failed", "skipped", "xfailed", "not run"


class JunitError(Exception):
    """The file is not a JUnit XML report pytest could have written."""


@dataclass(frozen=True)
class LastRun:
    path: Path
    timestamp: str
    outcomes: dict[tuple[str, str], str]

    def outcome(self, nodeid: str) -> str:
        return self.outcomes.get(junit_key(nodeid), NOT_RUN)


def junit_key(nodeid: str) -> tuple[str, str]:
    """(classname, name) as pytest's junitxml writes them for a node id: the file path in dotted
    form without `.py`, classes appended, and the function with its parameters as the name."""
    path, bracket, params = nodeid.partition("[")
    names = path.split("::")
    names[0] = re.sub(r"\.py$", "", names[0].replace("/", "."))
    names[-1] += bracket + params
    return ".".join(names[:-1]), names[-1]


def _outcome(case: ET.Element) -> str:
    if case.find("failure") is not None or case.find("error") is not None:
        return FAILED
    skipped = case.find("skipped")
    if skipped is not None:
        return XFAILED if skipped.get("type") == "pytest.xfail" else SKIPPED
    return PASSED


def read(path: Path) -> LastRun:
    try:
        # Our own pytest run wrote it; expat (>= 2.4.1, as Debian 12 ships) also caps entity expansion.
        root = ET.parse(path).getroot()  # noqa: S314
    except (OSError, ET.ParseError) as e:
        raise JunitError(f"{path}: {e}") from e
    suites = [root] if root.tag == "testsuite" else root.findall("testsuite")
    if root.tag not in ("testsuite", "testsuites") or not suites:
        raise JunitError(f"{path}: not a JUnit XML report (root element <{root.tag}>)")
    outcomes: dict[tuple[str, str], str] = {}
    for suite in suites:
        for case in suite.iter("testcase"):
            key = (case.get("classname", ""), case.get("name", ""))
            result = _outcome(case)
            # A test reported twice (call, then a teardown error) counts as failed.
            if outcomes.get(key) != FAILED:
                outcomes[key] = result
    return LastRun(path, suites[0].get("timestamp", ""), outcomes)
