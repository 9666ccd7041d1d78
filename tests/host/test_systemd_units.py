"""The systemd units pass `systemd-analyze verify` (scripts/verify-units.sh), and the check can fail."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

pytestmark = [
    pytest.mark.host,
    pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze not installed"),
]

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "scripts" / "verify-units.sh"
UNIT_DIR = REPO / "systemd"
DAEMONS = ("cml-tpm2d.service", "cml-scd.service", "cmld.service")
UNITS = (*DAEMONS, "cml-sysdata.service")


def run_verify(unit_dir: Path | None = None) -> subprocess.CompletedProcess[str]:
    args = ["bash", str(SCRIPT)]
    if unit_dir is not None:
        args.append(str(unit_dir))
    return subprocess.run(args, capture_output=True, text=True, timeout=60, check=False)


def broken_copy(tmp_path: Path, unit: str, old: str, new: str) -> Path:
    """Copy the repo's units to tmp_path, replacing `old` by `new` in `unit`."""
    for name in UNITS:
        shutil.copy(UNIT_DIR / name, tmp_path / name)
    text = (tmp_path / unit).read_text()
    assert old in text, f"{old!r} not in {unit}"
    (tmp_path / unit).write_text(text.replace(old, new, 1))
    return tmp_path


def test_units_present() -> None:
    for name in UNITS:
        assert (UNIT_DIR / name).is_file(), name


def test_repo_units_verify_clean() -> None:
    res = run_verify()
    assert res.returncode == 0, res.stdout + res.stderr
    assert f"systemd units verify clean: {len(UNITS)} units" in res.stdout
    assert "exposure level for cml-scd.service" in res.stdout


def test_unparsable_setting_fails(tmp_path: Path) -> None:
    # systemd-analyze itself exits 0 here ("Failed to parse service type, ignoring"); the script must not.
    res = run_verify(broken_copy(tmp_path, "cml-scd.service", "Type=notify", "Type=notfy"))
    assert res.returncode != 0, res.stdout
    assert "notfy" in res.stderr


def test_missing_binary_fails(tmp_path: Path) -> None:
    res = run_verify(broken_copy(tmp_path, "cmld.service", "/usr/bin/cmld ", "/usr/bin/cmld-missing "))
    assert res.returncode != 0, res.stdout
    assert "cmld-missing" in res.stderr


def test_missing_required_unit_fails(tmp_path: Path) -> None:
    res = run_verify(broken_copy(tmp_path, "cmld.service", "Wants=cml-scd.service",
                                 "Wants=cml-scd.service\nRequires=cml-nosuch.service"))
    assert res.returncode != 0, res.stdout
    assert "cml-nosuch.service" in res.stderr


def test_every_daemon_is_restarted_whatever_ended_it() -> None:
    """The original cmld restarts its units (scd, tpm2d) whenever they stop; here systemd does it,
    for a clean exit too (Restart=always), and cmld does not go down with a restarting scd."""
    for name in DAEMONS:
        lines = (UNIT_DIR / name).read_text().splitlines()
        assert "Restart=always" in lines, name
        assert any(line.startswith("RestartSec=") for line in lines), name
    cmld = (UNIT_DIR / "cmld.service").read_text().splitlines()
    hard = [line for line in cmld if line.startswith(("Requires=", "BindsTo=", "PartOf="))]
    assert not any(d in line for line in hard for d in DAEMONS), hard
    assert any(line.startswith("ExecStart=") and "--wait-services" in line for line in cmld)


def test_cmld_never_starts_without_its_system_data_volume() -> None:
    """cml-sysdata is a oneshot (no Restart=always: systemd refuses that for oneshots). cmld
    Requires= it, so when the volume cannot be opened at boot (PCR 7 differs, keys destroyed)
    cmld is not started on the empty directories underneath; the VM tier boots into that case."""
    sysdata = (UNIT_DIR / "cml-sysdata.service").read_text().splitlines()
    assert "Type=oneshot" in sysdata and "RemainAfterExit=yes" in sysdata
    assert any(line.startswith("Before=") and "cmld.service" in line for line in sysdata)
    cmld = (UNIT_DIR / "cmld.service").read_text().splitlines()
    assert "Requires=cml-sysdata.service" in cmld
    assert any(line.startswith("After=") and "cml-sysdata.service" in line for line in cmld)
