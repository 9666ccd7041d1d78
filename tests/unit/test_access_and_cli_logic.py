"""Access policy and CLI helpers, pure logic."""

from __future__ import annotations

import pytest

from cml_common.messages.control_pb2 import ControllerToDaemon as C
from cml_control.exec_session import exit_code_from_reason
from cml_control.main import build_parser, normalise_argv
from cmld.control.access import PROVISIONED, is_allowed

pytestmark = pytest.mark.unit


def test_provisioned_allowlist_matches_the_original() -> None:
    assert len(PROVISIONED) == 17
    for cmd in (C.SET_PROVISIONED, C.REMOVE_CONTAINER, C.CONTAINER_WIPE, C.CONTAINER_EXEC_CMD,
                C.REGISTER_NEWCA, C.PULL_DEVICE_CSR, C.PUSH_DEVICE_CERT, C.WIPE_DEVICE):
        assert not is_allowed(cmd, privileged=True, provisioned=True)
        assert is_allowed(cmd, privileged=True, provisioned=False)
    assert is_allowed(C.CONTAINER_START, privileged=True, provisioned=True)


def test_unprivileged_socket() -> None:
    assert is_allowed(C.PUSH_GUESTOS_CONFIG, privileged=False, provisioned=False)
    assert not is_allowed(C.LIST_CONTAINERS, privileged=False, provisioned=False)


@pytest.mark.parametrize("reason,code,msg", [
    ("", 0, None), ("exit 3", 3, None), ("signal 9", 137, None), ("no such container", 1, "no such container"),
])
def test_exec_end_reason(reason: str, code: int, msg: str | None) -> None:
    assert exit_code_from_reason(reason) == (code, msg)


def test_argv_forms() -> None:
    p = build_parser()
    assert normalise_argv(["-s", "/x", "LIST"]) == ["-s", "/x", "list"]
    for argv in (["start", "c", "--key=abc"], ["start", "c", "--key", "abc"], ["start", "c", "-k", "abc"]):
        assert p.parse_args(argv).key == "abc"
    a = p.parse_args(["start", "c", "-s"])
    assert a.setup and a.key is None
    a = p.parse_args(["assign_iface", "c", "--iface", "eth0"])
    assert a.iface == "eth0"
    a = p.parse_args(["run", "c", "nopty", "sh", "-c", "echo hi"])
    assert a.argv == ["nopty", "sh", "-c", "echo hi"]
    a = p.parse_args(["list", "-s", "--json"])
    assert a.system and a.json
