"""cmld's errors: one base, each carrying the reply a control command ends with.

A handler that catches a `CmldError` answers `err.reply` with `str(err)` as the error message;
anything else that escapes a handler is a bug (logged with its traceback, answered CMD_FAILED).
"""

from __future__ import annotations

from cml_common.errors import CmlError
from cml_common.messages.control_pb2 import DaemonToController

D = DaemonToController


class CmldError(CmlError):
    """An expected refusal or failure; `reply` is its DaemonToController.Response."""

    reply: int = D.CMD_FAILED

    def __init__(self, message: str, reply: int | None = None) -> None:
        super().__init__(message)
        if reply is not None:
            self.reply = reply


class StateError(CmldError):
    """The container's state does not allow the action (reply: the action's "not now" code)."""


class StartError(CmldError):
    """A start refused or failed; `corrupted` marks a broken volume or key (the container becomes
    ZOMBIE until it is wiped)."""

    reply = D.CONTAINER_START_EINTERNAL

    def __init__(self, message: str, *, corrupted: bool = False, reply: int | None = None) -> None:
        super().__init__(message, reply)
        self.corrupted = corrupted


class TokenFailure(CmldError):
    """A refused token operation (wrong PIN, unpaired, locked...), with the reply the original gives;
    `corrupt`: the container's key file is unusable."""

    def __init__(self, reply: int, message: str, corrupt: bool = False) -> None:
        super().__init__(message, reply)
        self.corrupt = corrupt

    @property
    def code(self) -> int:
        return self.reply

    @property
    def message(self) -> str:
        return str(self)


class InstallError(CmldError):
    """A GuestOS push refused or failed; nothing was installed."""

    reply = D.GUESTOS_MGR_INSTALL_FAILED


class CAError(CmldError):
    """A CA certificate that cannot be registered."""

    reply = D.GUESTOS_MGR_REGISTER_CA_ERROR


class LaunchError(CmldError):
    """The launcher or the container's first process reported a failure (`code`: the original's
    compartment error number)."""

    reply = D.CONTAINER_START_EINTERNAL

    def __init__(self, message: str, code: int = 1) -> None:
        super().__init__(message)
        self.code = code


class ScdClientError(CmldError):
    """scd could not do what cmld asked (unreachable, timeout, protocol error, refused)."""
