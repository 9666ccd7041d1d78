"""Freezing a container through its cgroup: FREEZING until the kernel reports it frozen, polled
fast at first and every 100 ms later; thawed back if that takes longer than --freeze-timeout (the
original's 5 s)."""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Protocol

from cml_common.messages.container_pb2 import ContainerState as S
from cmld.cgroups.driver import ContainerCgroup
from cmld.errors import StateError
from cmld.runtime.transitions import FREEZABLE

log = logging.getLogger(__name__)


class Freezable(Protocol):
    """The side of a compartment the freezer works on."""

    @property
    def state(self) -> int: ...

    @property
    def name(self) -> str: ...

    @property
    def cgroup(self) -> ContainerCgroup | None: ...

    def set_state(self, new: int) -> None: ...


class Freezer:
    def __init__(self, timeout: float) -> None:
        self.timeout = timeout
        self.state_before: int = S.RUNNING  # RUNNING or SETUP: where unfreeze returns to

    async def freeze(self, comp: Freezable) -> bool:
        if comp.state in (S.FROZEN, S.FREEZING):
            return True
        if comp.state not in FREEZABLE:
            raise StateError(f"container is {S.Name(comp.state)}")
        self.state_before = comp.state
        comp.set_state(S.FREEZING)
        cg = comp.cgroup
        if cg is None:
            comp.set_state(self.state_before)
            return False
        cg.freeze()
        timeout = self.timeout
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if cg.is_frozen():
                comp.set_state(S.FROZEN)
                return True
            await asyncio.sleep(0.1 if time.monotonic() > deadline - timeout + 0.1 else 0.005)
            if comp.state != S.FREEZING:
                return False
        log.warning("container %s: not frozen within %.1f s; thawing", comp.name, timeout)
        cg.thaw()
        comp.set_state(self.state_before)
        return False

    async def unfreeze(self, comp: Freezable) -> bool:
        if comp.state not in (S.FREEZING, S.FROZEN):
            raise StateError(f"container is {S.Name(comp.state)}")
        cg = comp.cgroup
        if cg is None:
            return False
        cg.thaw()
        comp.set_state(self.state_before)
        return True
