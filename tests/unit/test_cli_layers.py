"""The command layer and the two presentations, pure logic: every command has a handler, replies
are judged as cml-control reports them, and `control` logs in the original's format."""

from __future__ import annotations

import io
import os
import sys

import pytest

from cml_common.messages.control_pb2 import DaemonToController
from cml_control import control_main, grammar
from cml_control.commands import SIMPLE_CONTAINER, SIMPLE_GLOBAL, Runner
from cml_control.exec_session import exit_code_from_reason
from cml_control.reply import Reply
from cml_control.result import reply_ok

pytestmark = pytest.mark.unit


def test_every_command_has_a_handler() -> None:
    for cmd in grammar.COMMANDS:
        assert cmd in SIMPLE_GLOBAL or cmd in SIMPLE_CONTAINER or callable(getattr(Runner, "cmd_" + cmd, None)), cmd


@pytest.mark.parametrize("reply,ok", [
    (DaemonToController(code=DaemonToController.RESPONSE, response=DaemonToController.CMD_OK), True),
    (DaemonToController(code=DaemonToController.RESPONSE, response=DaemonToController.CONTAINER_START_OK), True),
    (DaemonToController(code=DaemonToController.RESPONSE, response=DaemonToController.CMD_FAILED), False),
    (DaemonToController(code=DaemonToController.RESPONSE), False),  # no response at all
    (DaemonToController(code=DaemonToController.CONTAINER_STATUS), True),
])
def test_reply_ok(reply: DaemonToController, ok: bool) -> None:
    assert reply_ok(Reply(reply.SerializeToString())) == ok


@pytest.mark.parametrize("reason,code,msg", [
    ("", 0, None), ("exit 3", 3, None), ("signal 9", 137, None), ("no such container", 1, "no such container"),
    ("exit x", 1, "exit x"), ("exit  3", 1, "exit  3"),
])
def test_exec_end_reason(reason: str, code: int, msg: str | None) -> None:
    assert exit_code_from_reason(reason) == (code, msg)


def test_log_line_format(monkeypatch: pytest.MonkeyPatch) -> None:
    buf = io.BytesIO()
    fake = io.TextIOWrapper(buf)
    monkeypatch.setattr(sys, "stderr", fake)
    control_main.log_line("INFO", "Retrying with name")
    control_main.log_line("FATAL", "x" * 5000)
    control_main.log_line("WARN", "w")
    fake.flush()
    pid = os.getpid()
    lines = buf.getvalue().decode().split("\n")
    assert lines[0] == f"[{pid}] <INFO>  Retrying with name"
    assert lines[1] == f"[{pid}] <FATAL> " + "x" * 4095  # logf formats into 4096 bytes
    assert lines[2] == f"[{pid}] <WARN>  w"
