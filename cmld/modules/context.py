"""What the modules of one container start share."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cml_common.messages.guestos_pb2 import GuestOSConfig
from cmld.launcher.spec import LaunchSpec

if TYPE_CHECKING:
    from cmld.containers.container import Container
    from cmld.runtime.settings import RuntimeSettings


@dataclass
class StartContext:
    container: Container
    guestos: GuestOSConfig | None
    settings: RuntimeSettings
    spec: LaunchSpec
    setup_mode: bool = False
    init_pid: int = 0
    received_fds: dict[str, int] = field(default_factory=dict)
    # Per-module runtime data that cleanup needs (cgroup handle, netns path...), by module name.
    data: dict[str, Any] = field(default_factory=dict)
    # The container key unwrapped by its token (None without a token): for the modules that set
    # up encrypted volumes; wiped once the start is over, as the original does after clone.
    key: bytearray | None = field(default=None, repr=False)

    @property
    def uuid(self) -> str:
        return self.container.uuid

    @property
    def run_dir(self) -> Path:
        return self.settings.run_dir / "containers" / self.container.uuid

    def take_fd(self, name: str) -> int | None:
        return self.received_fds.pop(name, None)

    def close_received_fds(self) -> None:
        """The child's fds no module took."""
        for fd in self.received_fds.values():
            os.close(fd)
        self.received_fds.clear()
