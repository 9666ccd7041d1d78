"""Every state transition of a container becomes an audit record (with auditing on), under the
original's event names where it has one (container-start, container-stop, shutting-down, reboot).
A start that fails (STARTING -> STOPPED/ZOMBIE) is a failed system action with its reason."""

from __future__ import annotations

from typing import Protocol

from cml_common.messages.container_pb2 import ContainerState as S
from cmld.audit import events
from cmld.containers.container import Container

NAMES: dict[int, str] = {S.BOOTING: "container-start", S.RUNNING: "container-running", S.SHUTDOWN: "shutting-down",
         S.REBOOTING: "reboot", S.FROZEN: "container-freeze", S.ZOMBIE: "container-zombie",
         S.STOPPED: "container-stop", S.STARTING: "container-starting", S.FREEZING: "container-freezing",
         S.SETUP: "container-setup"}


def audit_transition(c: Container, old: int, new: int, reason: str = "") -> None:
    if not events.enabled():
        return
    failed = (old == S.STARTING and new in (S.STOPPED, S.ZOMBIE)) or new == S.ZOMBIE
    name = "container-start" if failed and old == S.STARTING else NAMES.get(new, "state-change")
    meta = {"name": c.config.name, "from": S.Name(old), "to": S.Name(new)}
    if failed and reason:
        meta["error"] = reason
    events.emit("FSA" if failed else "SSA", "CONTAINER_MGMT", name, c.uuid, with_client=False, **meta)


class HasLastError(Protocol):
    last_error: str


def observe_transition(comp: HasLastError, c: Container, old: int, new: int) -> None:
    """A compartment's observer: the failure reason comes from the compartment."""
    audit_transition(c, old, new, comp.last_error)
