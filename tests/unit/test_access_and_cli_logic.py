"""Access policy of the control socket, pure logic (the CLI's own logic: test_cli_*.py)."""

from __future__ import annotations

import pytest

from cml_common.messages.control_pb2 import ControllerToDaemon as C
from cmld.control.access import PROVISIONED, is_allowed

pytestmark = pytest.mark.unit


@pytest.mark.req("CR 2.1")
def test_provisioned_allowlist_matches_the_original() -> None:
    assert len(PROVISIONED) == 17
    for cmd in (C.SET_PROVISIONED, C.REMOVE_CONTAINER, C.CONTAINER_WIPE, C.CONTAINER_EXEC_CMD,
                C.REGISTER_NEWCA, C.PULL_DEVICE_CSR, C.PUSH_DEVICE_CERT, C.WIPE_DEVICE):
        assert not is_allowed(cmd, privileged=True, provisioned=True)
        assert is_allowed(cmd, privileged=True, provisioned=False)
    assert is_allowed(C.CONTAINER_START, privileged=True, provisioned=True)


@pytest.mark.req("CR 2.1", "CR 2.1 (1)")
def test_unprivileged_socket() -> None:
    assert is_allowed(C.PUSH_GUESTOS_CONFIG, privileged=False, provisioned=False)
    assert not is_allowed(C.LIST_CONTAINERS, privileged=False, provisioned=False)
