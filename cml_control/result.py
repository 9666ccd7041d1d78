"""What a command's run ended with, for each program to turn into its exit status, and which
replies count as success in cml-control's sense."""

from __future__ import annotations

from . import wire
from .reply import Reply

D, R = wire.D, wire.R
SUCCESS = frozenset({R["CMD_OK"], R["CONTAINER_START_OK"], R["CONTAINER_STOP_OK"],
                     R["CONTAINER_CHANGE_PIN_SUCCESSFUL"], R["DEVICE_CERT_OK"], R["GUESTOS_MGR_INSTALL_COMPLETED"],
                     R["GUESTOS_MGR_REGISTER_CA_OK"]})


class Result:
    """`ok`: success in cml-control's sense. `reply`: the last reply (for its message).
    `status`: an exit status the command decides itself (--wait; `run` in `exit_of_run`)."""

    __slots__ = ("exit_of_run", "ok", "reply", "status")

    def __init__(self, ok: bool, reply: Reply | None = None, *, status: int | None = None,
                 exit_of_run: int | None = None) -> None:
        self.ok = ok
        self.reply = reply
        self.status = status
        self.exit_of_run = exit_of_run


def reply_ok(reply: Reply) -> bool:
    if reply.code == D["RESPONSE"]:
        return reply.has_response() and reply.response in SUCCESS
    return True
