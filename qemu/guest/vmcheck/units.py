"""Facts about the suite's systemd units: state, readiness, start order, status, verify, and
whether cml-control reaches cmld. A failed unit brings its own journal lines along."""

from __future__ import annotations

from typing import Any

from .common import sh

UNITS = ("cml-tpm2d.service", "cml-scd.service", "cmld.service")
PROPS = ("ActiveState", "SubState", "Result", "NRestarts", "StatusText", "MainPID", "ExecMainStartTimestampMonotonic",
         "ActiveEnterTimestampMonotonic", "ExecMainStatus")


def show(unit: str) -> dict[str, str]:
    out = sh("systemctl", "show", unit, *[f"--property={p}" for p in PROPS]).out
    return dict(line.split("=", 1) for line in out.splitlines() if "=" in line)


def check() -> dict[str, Any]:
    units: dict[str, Any] = {}
    for u in UNITS:
        props = show(u)
        props["status"] = sh("systemctl", "status", "--no-pager", "-l", "-n", "0", u).text
        if props.get("ActiveState") != "active":
            props["journal"] = sh("journalctl", "-b", "-u", u, "--no-pager", "-o", "cat", "-n", "40").text
        units[u] = props
    verify = sh("systemd-analyze", "verify", *[f"/etc/systemd/system/{u}" for u in UNITS])
    listing = sh("cml-control", "list", timeout=60)
    return {
        "units": units,
        "verify": {"rc": verify.rc, "output": verify.text},
        "cml_control_list": {"rc": listing.rc, "output": listing.text},
        "analyze_time": sh("systemd-analyze", "time").text,
        "failed_units": sh("systemctl", "list-units", "--failed", "--no-legend", "--plain").text,
    }
