"""A container as cmld tracks it: identity, config and lifecycle state."""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from cml_common.messages.container_pb2 import (
    ContainerConfig,
    ContainerState,
    ContainerStatus,
)
from cml_common.paths import C0_UUID

RUNNING_STATES = frozenset({ContainerState.BOOTING, ContainerState.RUNNING, ContainerState.SETUP})
ACTIVE_STATES = RUNNING_STATES | {
    ContainerState.STARTING, ContainerState.FREEZING, ContainerState.FROZEN,
    ContainerState.SHUTDOWN, ContainerState.REBOOTING,
}


@dataclass
class Container:
    uuid: str
    config: ContainerConfig
    created: int = 0
    # Changed only by the container's compartment, through its transition table (`state`).
    _state: int = field(default=ContainerState.STOPPED, repr=False)
    started_monotonic: float | None = None
    # Set when the config on disk changed while the container was active; applied when it stops.
    pending_config: ContainerConfig | None = field(default=None, repr=False)
    # c0 made in memory from device.conf's c0os (no config file), as the original's cmld_init_c0.
    implicit: bool = False

    @property
    def state(self) -> int:
        return self._state

    @property
    def name(self) -> str:
        return self.config.name

    @property
    def is_c0(self) -> bool:
        return self.uuid == C0_UUID

    @property
    def is_active(self) -> bool:
        return self.state in ACTIVE_STATES

    def uptime(self) -> int:
        if self.started_monotonic is None or not self.is_active:
            return 0
        return int(time.monotonic() - self.started_monotonic)

    def status(self, guestos_name: str, trust: int, cryptfs_mode: int) -> ContainerStatus:
        return ContainerStatus(
            uuid=self.uuid,
            name=self.config.name,
            type=self.config.type,
            state=self.state,  # type: ignore[arg-type]
            uptime=self.uptime(),
            created=self.created,
            guestos=guestos_name or "none",
            trust_level=trust,  # type: ignore[arg-type]
            cryptfs_mode=cryptfs_mode,  # type: ignore[arg-type]
        )

