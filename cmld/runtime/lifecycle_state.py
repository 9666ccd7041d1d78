"""The state of one container and its one timer: the only writer of a container's state (along
the transition table), the observers told of each change, and the timeout that is armed for the
current state (boot, stop, the repeated kill)."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable

from cml_common.messages.container_pb2 import ContainerState as S
from cmld.containers.container import Container
from cmld.runtime.transitions import allowed

log = logging.getLogger(__name__)
Observer = Callable[[Container, int, int], None]


class LifecycleState:
    def __init__(self, container: Container) -> None:
        self.container = container
        self.observers: list[Observer] = []
        self._timer: asyncio.TimerHandle | None = None

    @property
    def state(self) -> int:
        return self.container.state

    @property
    def name(self) -> str:
        return self.container.name

    def set_state(self, new: int) -> None:
        old = self.container.state
        if old == new:
            return
        if not allowed(old, new):
            log.error("container %s: refusing state change %s -> %s", self.container.name,
                      S.Name(old), S.Name(new))
            return
        self.container._state = new  # the only writer of a container's state
        log.info("container %s (%s): %s -> %s", self.container.name, self.container.uuid,
                 S.Name(old), S.Name(new))
        if new == S.STARTING:
            self.container.started_monotonic = time.monotonic()
        for obs in list(self.observers):
            try:
                obs(self.container, old, new)
            except Exception:
                log.exception("state observer failed")

    def _arm(self, seconds: float, what: str, action: Callable[[], None]) -> None:
        self._disarm()

        def fire() -> None:
            self._timer = None
            log.warning("container %s: %s timeout (%.1f s)", self.container.name, what, seconds)
            action()
        self._timer = asyncio.get_running_loop().call_later(seconds, fire)

    def _disarm(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
