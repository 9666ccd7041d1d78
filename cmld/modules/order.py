"""The modules of a container, in the order their hooks run (the original's link order): identity
and limits first, then namespaces and file systems, then what talks to the running container,
then the last restrictions the child applies right before exec. Cleanup runs in reverse."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from cmld.audit.auditor import Auditor
from cmld.cgroups.driver import CgroupDriver
from cmld.clients.tpm2d import Tpm2dMeasurements
from cmld.containers.container import Container
from cmld.modules.base import Module
from cmld.modules.capabilities import CapabilitiesModule
from cmld.modules.cgroups import CgroupsModule
from cmld.modules.control_socket import ControlSocketModule, ServeControl
from cmld.modules.crypt_volumes import CorruptionSink
from cmld.modules.devices import DeviceAssignments, DevicesModule
from cmld.modules.fifos import FifoBoard, FifoModule
from cmld.modules.halt import HaltModule
from cmld.modules.measurement import MeasurementModule
from cmld.modules.meminfo import MeminfoModule
from cmld.modules.network import NetworkModule
from cmld.modules.seccomp import SeccompModule
from cmld.modules.service import ServiceModule
from cmld.modules.settings import RuntimeSettings
from cmld.modules.timens import TimeModule
from cmld.modules.usb import UsbModule
from cmld.modules.usb_hub import HotplugHub
from cmld.modules.userns import UserNamespaceModule
from cmld.modules.volumes import VolumesModule
from cmld.net.fabric import NetFabric


@dataclass
class ModuleDeps:
    """What modules need from the daemon, shared by every container."""

    settings: RuntimeSettings
    driver: CgroupDriver
    assignments: DeviceAssignments
    serve_control: ServeControl | None = None  # control sockets in c0 / install_guest containers (cmld's main)
    tpm: Tpm2dMeasurements | None = None  # with tpm_enabled: measured GuestOS images
    corruption: CorruptionSink | None = None  # where a tampered volume is reported (the runtime's monitor)
    fifos: FifoBoard | None = None  # which FIFO goes to which container (one for the device)
    hotplug: HotplugHub | None = None  # the uevent listener (one for the device)
    net: NetFabric | None = None  # the network every container shares (None: namespaces only)
    audit: Auditor | None = None  # with audit_size > 0: the record pull over the service channel


def container_modules(c: Container, deps: ModuleDeps, on_boot_completed: Callable[[], None],
                      continue_stop: Callable[[Module], Awaitable[None]]) -> list[Module]:
    """`on_boot_completed`: the service reported BOOT_COMPLETED; `continue_stop`: the service
    that received SHUTDOWN left without ending the container (the stop goes on with halt)."""
    s = deps.settings
    return [
        *([UsbModule(deps.hotplug)] if deps.hotplug is not None else []),  # before devices: its grants
        UserNamespaceModule(),
        CgroupsModule(deps.driver),
        DevicesModule(deps.assignments),
        NetworkModule(deps.net),
        VolumesModule(s.guestos_dir, s.shared_files_dir, tpm=deps.tpm, corruption=deps.corruption),
        MeminfoModule(),
        *([MeasurementModule(deps.tpm)] if deps.tpm is not None else []),
        ServiceModule(on_boot_completed, s.host_dns, continue_stop, deps.audit),
        *([ControlSocketModule(deps.serve_control)] if deps.serve_control else []),
        HaltModule(),
        *([FifoModule(deps.fifos)] if deps.fifos is not None else []),
        TimeModule(),
        CapabilitiesModule(),
        SeccompModule(),
    ]
