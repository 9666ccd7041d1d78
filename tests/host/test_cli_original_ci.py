"""The original's CI integration flow, replayed against our daemons through `control`: the shell
functions of gyroidos_ci_common's resources/VM-container-commands.sh, taken unchanged from the
mirrored repository (only `/usr/sbin/control` points at ours and `ssh` runs locally), grep the
output of `control` for the strings the original prints (CONTAINER_START_OK, `Abort`,
`Container with provided uuid/name does not exist!`, `device_is_provisioned: true`...) and poll
`control state` in loops, under `set -e`."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from ..conftest import BIN, DaemonFactory, is_root
from .scdlib import scd_and_cmld
from .test_cli_commands import make_ca

MIRROR = Path("/work/.mirror/gyroidos+gyroidos_ci_common/repo")
PIN = "ci-pin-1234"


def original_functions() -> str | None:
    try:
        p = subprocess.run(["git", "-C", str(MIRROR), "show", "HEAD:resources/VM-container-commands.sh"],
                           capture_output=True, text=True, timeout=30, check=False)
    except OSError:
        return None
    return p.stdout if p.returncode == 0 and "cmd_control_start()" in p.stdout else None


FUNCTIONS = original_functions()
pytestmark = [pytest.mark.host, pytest.mark.skipif(not is_root(), reason="needs root"),
              pytest.mark.skipif(FUNCTIONS is None, reason="the gyroidos_ci_common mirror is not here")]

FLOW = r"""
set -e
SSH_OPTS=""
ssh() { bash -c "${@: -1}"; }
echo_status() { echo "$@"; }
echo_error() { echo "ERROR: $*" >&2; }
source "$LIB"
T="$WORK"
cmd_control_list
cmd_control_create "$T/testcontainer.conf"
cmd_control_list_container testcontainer
cmd_control_config testcontainer
cmd_control_list_guestos busybox
uuid=$(cmd_control_get_uuid testcontainer)
test -n "$uuid"
cmd_control_start_error_unpaired testcontainer "$PIN"
cmd_control_change_pin testcontainer "" "$PIN"
cmd_control_change_pin_error testcontainer wrongpin "$PIN"
cmd_control_start testcontainer "$PIN"
cmd_control_state_is_running testcontainer
cmd_control_start_error_eexist testcontainer "$PIN"
cmd_control_stop testcontainer "$PIN"
cmd_control_stop_error_notrunning testcontainer "$PIN"
cmd_control_update_config "$uuid $T/rename.conf" 'name: "testcontainer-rename"'
cmd_control_start testcontainer-rename "$PIN"
cmd_control_stop "$uuid" "$PIN"
mkdir -p "$T/logs"
cmd_control_retrieve_logs "$T/logs" "CMD_OK"
cmd_control_remove testcontainer-rename "$PIN"
cmd_control_list_ncontainer testcontainer-rename
cmd_control_remove_error_eexist testcontainer-rename "$PIN"
cmd_control_remove_error_eexist "nonexistent-container"
cmd_control_ca_register " $T/ca.pem"
cmd_control_create "$T/second.conf"
cmd_control_create_error "$T/second.conf"
cmd_control_get_provisioned false
cmd_control_set_provisioned "CMD_OK"
cmd_control_get_provisioned true
cmd_control_set_provisioned "CMD_UNSUPPORTED"
cmd_control_reboot
echo REPLAY-COMPLETE
"""


def test_original_ci_functions(cmld_factory: DaemonFactory, guestos_src: Path, tmp_path: Path) -> None:
    _, d = scd_and_cmld(cmld_factory, guestos=guestos_src)
    assert FUNCTIONS is not None
    lib = tmp_path / "VM-container-commands.sh"
    lib.write_text(FUNCTIONS.replace("/usr/sbin/control", f"{BIN / 'control'} -s {d.socket}"))
    conf = 'name: "{}"\nguest_os: "busybox"\ncolor: 0\ntype: CONTAINER\ntoken_type: {}\nram_limit: 64\n'
    (tmp_path / "testcontainer.conf").write_text(conf.format("testcontainer", "SOFT"))
    (tmp_path / "rename.conf").write_text(conf.format("testcontainer-rename", "SOFT"))
    (tmp_path / "second.conf").write_text(conf.format("second", "NONE"))
    make_ca(tmp_path).rename(tmp_path / "ca.pem")
    p = subprocess.run(["bash", "-c", FLOW], capture_output=True, text=True, timeout=600, check=False,
                       env={"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "LIB": str(lib), "WORK": str(tmp_path),
                            "PIN": PIN})
    assert p.returncode == 0 and p.stdout.rstrip().endswith("REPLAY-COMPLETE"), p.stdout[-4000:] + p.stderr[-3000:]
    assert "Check successful" in p.stdout and "Container is running" in p.stdout
    assert "Container is stopped" in p.stdout
