"""What every family of control handlers shares: the daemon, and the container a request names.

A handler raises a `CmldError` to refuse; the dispatcher answers it with the error's reply code
and message. Handlers send other reply shapes (CONTAINER_CONFIG, EXEC_END...) themselves.
"""

from __future__ import annotations

import logging

from cml_common.messages.container_pb2 import ContainerState
from cml_common.messages.control_pb2 import ControllerToDaemon
from cml_common.messages.control_pb2 import DaemonToController as D
from cmld.containers.container import Container
from cmld.control.server import ControlConnection
from cmld.daemon import Cmld
from cmld.errors import CmldError
from cmld.runtime.registry import Runtime

log = logging.getLogger(__name__)


class UnknownContainer(CmldError):
    """Unlike the original, which sends no reply at all, an unresolvable UUID gets CMD_FAILED."""


def state_name(c: Container) -> str:
    return ContainerState.Name(c.state)


class CommandFamily:
    def __init__(self, cmld: Cmld) -> None:
        self.cmld = cmld

    def target(self, req: ControllerToDaemon, conn: ControlConnection) -> Container:
        """The one container `container_uuids` names, or UnknownContainer."""
        name = ControllerToDaemon.Command.Name(req.command)
        if len(req.container_uuids) != 1:
            raise UnknownContainer(f"{name} needs exactly one container UUID, got {len(req.container_uuids)}")
        c = self.cmld.containers.get(req.container_uuids[0])
        if c is None:
            raise UnknownContainer(f"{name}: no container {req.container_uuids[0]!r}")
        return c

    def runtime(self, reply: int = D.CMD_FAILED) -> Runtime:
        """The container runtime, or a refusal naming why there is none."""
        rt = self.cmld.runtime
        if rt is None or rt.driver is None:
            raise CmldError(rt.unavailable if rt is not None else "no container runtime", reply)
        return rt

    @staticmethod
    def refuse_c0(c: Container) -> None:
        """c0 is not started, stopped or re-keyed through the control API (the original)."""
        if c.is_c0:
            raise CmldError("c0 is managed by cmld itself", D.CMD_UNSUPPORTED)
