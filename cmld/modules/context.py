"""What the modules of one container start share: the container, its GuestOS, the launch spec
they fill in, and the typed handles one module makes and others (or the runtime) use."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from cml_common.logbudget import LogBudget
from cml_common.messages.guestos_pb2 import GuestOSConfig
from cmld.launcher.spec import DevNode, LaunchSpec

if TYPE_CHECKING:
    from cmld.cgroups.driver import ContainerCgroup
    from cmld.containers.container import Container
    from cmld.modules.settings import RuntimeSettings


class DeviceAccess(Protocol):
    """The container's current device policy (the devices module; dev_access and USB hotplug
    change it)."""

    def is_allowed(self, dev_type: str, major: int, minor: int) -> bool: ...

    def grant(self, ctx: StartContext, rule_text: str, assign: bool) -> None: ...

    def withdraw(self, ctx: StartContext, rule_text: str) -> None: ...


class Closeable(Protocol):
    def close(self) -> None: ...


class SessionSupervision(Protocol):
    """Supervision of an exec session's seccomp listener like the container's (the seccomp module)."""

    def supervise_session(self, fd: int) -> Closeable: ...


@dataclass
class StartContext:
    container: Container
    guestos: GuestOSConfig | None
    settings: RuntimeSettings
    spec: LaunchSpec
    setup_mode: bool = False
    init_pid: int = 0
    received_fds: dict[str, int] = field(default_factory=dict)
    # Handles made by one module for the others and for the runtime (None until made):
    cgroup: ContainerCgroup | None = None  # cgroups module
    netns_path: str = ""  # network module: where the netns is bound
    devices: DeviceAccess | None = None  # devices module
    # usb module -> devices module at start: (rule, exclusive) and the nodes for them
    extra_device_rules: list[tuple[str, bool]] = field(default_factory=list)
    extra_nodes: list[DevNode] = field(default_factory=list)
    seccomp: SessionSupervision | None = None  # seccomp module
    image_digests: list[tuple[str, bytes]] = field(default_factory=list)  # volumes: (image path, SHA-256)
    # The container key unwrapped by its token (None without a token): for the modules that set
    # up encrypted volumes; wiped once the start is over, as the original does after clone.
    key: bytearray | None = field(default=None, repr=False)
    # How much this container may make cmld log, per kind of line (its compartment's: it outlives
    # a start, so a container cannot reset it by restarting).
    log_budget: LogBudget = field(default_factory=lambda: LogBudget("container"), repr=False)

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
