"""Everything cmld knows about the device, owned by the one event loop."""

from __future__ import annotations

import logging
import socket
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from cml_common.fsutil import write_atomic
from cml_common.messages.container_pb2 import (
    ContainerState,
    ContainerStatus,
    ContainerTrust,
    ContainerType,
    CryptfsMode,
)
from cml_common.messages.device_pb2 import DeviceConfig
from cml_common.paths import C0_UUID, SCD_SOCKET, SCD_UNIT_UUID, TPM2D_UNIT_UUID, Layout
from cmld.clients.scd import ScdClient
from cmld.containers.c0_key import C0KeyError, c0_key
from cmld.containers.container import Container
from cmld.containers.keys import ContainerKeys
from cmld.containers.store import ContainerStore
from cmld.crypt import mode as crypt_mode
from cmld.device import ab_slot
from cmld.device.config import load_device_config, load_device_uuid
from cmld.errors import InstallError
from cmld.guestos.install import GuestOSInstaller, TrustPolicy, verify_store
from cmld.guestos.select import GuestOSUnavailable, for_container, in_use, obsolete
from cmld.guestos.store import GuestOS, GuestOSStore

if TYPE_CHECKING:
    from cmld.runtime.registry import Runtime

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Unit:
    """A system service (scd, tpm2d) reported by `list --system`. It counts as RUNNING when its
    control socket accepts a connection right now, which is what cmld itself depends on."""

    uuid: str
    name: str
    socket_path: Path

    def is_up(self) -> bool:
        kind = socket.SOCK_SEQPACKET if self.name == "scd" else socket.SOCK_STREAM
        s = socket.socket(socket.AF_UNIX, kind | socket.SOCK_CLOEXEC)
        s.settimeout(0.2)
        try:
            s.connect(str(self.socket_path))
        except OSError:
            return False
        finally:
            s.close()
        return True

    def status(self) -> ContainerStatus:
        return ContainerStatus(
            uuid=self.uuid, name=self.name, type=ContainerType.CONTAINER,
            state=ContainerState.RUNNING if self.is_up() else ContainerState.STOPPED,
            uptime=0, created=0, guestos="host", trust_level=ContainerTrust.SIGNED,
            cryptfs_mode=CryptfsMode.NOT_IMPLEMENTED,
        )


class Cmld:
    def __init__(self, layout: Layout, *, log_dir: Path, device_conf: Path | None = None,
                 hosted_override: bool | None = None, scd_socket: Path | None = None,
                 tpm2d_socket: Path | None = None, efivars: Path = ab_slot.EFIVARS) -> None:
        self.layout = layout
        self.log_dir = log_dir
        self.device_conf_path = device_conf or ab_slot.device_conf_path(layout.device_conf, efivars)
        self.hosted_override = hosted_override
        self.device = DeviceConfig()
        self.device_uuid = ""
        self.guestos = GuestOSStore(layout.guestos)
        self.containers = ContainerStore(layout)
        self.units: list[Unit] = []
        self._provisioned = False
        self.runtime: Runtime | None = None
        if scd_socket is not None:
            self.units.append(Unit(SCD_UNIT_UUID, "scd", scd_socket))
        self.scd = ScdClient(scd_socket or SCD_SOCKET)
        self.keys = ContainerKeys(layout, self.scd)
        self.installer = GuestOSInstaller(self.guestos, self.scd)
        if tpm2d_socket is not None:
            self.units.append(Unit(TPM2D_UNIT_UUID, "tpm2d", tpm2d_socket))
        self.tpm2d_socket = tpm2d_socket
        # Why container volumes cannot use device-mapper here ("" where they can; set by main).
        self.crypt_unavailable = "not checked"

    # ------------------------------------------------------------------ loading

    def load(self) -> None:
        self.device = load_device_config(self.device_conf_path)
        if self.hosted_override is not None:
            self.device.hostedmode = self.hosted_override
        self.device_uuid = load_device_uuid(self.layout.tokens / "device_id.conf")
        self._provisioned = self.layout.provisioned_marker.exists()
        for d in (self.layout.containers, self.layout.keys, self.layout.shared):
            d.mkdir(parents=True, exist_ok=True, mode=0o700)
        self.guestos.load()
        self.containers.load()
        log.info("%d GuestOS(es), %d container(s) loaded",
                 len(self.guestos.names()), len(self.containers.all()))

    # ------------------------------------------------------------------ device state

    async def verify_guestos(self) -> None:
        """Trust levels for the loaded GuestOSes (scd verifies), then the implicit c0, which needs
        its GuestOS to have passed."""
        await verify_store(self.guestos, self.scd, self.trust_policy())
        if not self.hosted and self.containers.get(C0_UUID) is None:
            c0os = self.guestos.latest(self.device.c0os, complete=True) or self.guestos.latest(self.device.c0os)
            if c0os is not None:
                self.containers.add_implicit_c0(c0os.name, c0os.version)
            else:
                log.error("no c0 config and no usable GuestOS %r (device.conf c0os) to make one from: this "
                          "device has no management container", self.device.c0os)
        if not self.hosted and self.containers.get(C0_UUID) is not None:
            self._ensure_c0_key()

    def _ensure_c0_key(self) -> None:
        """c0's raw volume key is made with c0, as the original's cmld_set_key_c0, not at its
        first start: it exists whether or not this kernel has device-mapper."""
        try:
            key = c0_key(self.layout.container_key(C0_UUID), self.layout.container_dir(C0_UUID))
        except (C0KeyError, OSError) as e:
            log.error("c0's volume key: %s (c0's encrypted volumes will not open)", e)
            return
        key[:] = bytes(len(key))

    def trust_policy(self) -> TrustPolicy:
        return TrustPolicy(signed_configs=self.signed_configs,
                           locally_signed_images=bool(self.device.locally_signed_images),
                           provisioned=self.provisioned)

    @property
    def hosted(self) -> bool:
        return bool(self.device.hostedmode)

    @property
    def signed_configs(self) -> bool:
        return bool(self.device.signed_configs)

    @property
    def provisioned(self) -> bool:
        """Read from the marker at start and changed only by SET_PROVISIONED, as in the original;
        checked on every request, so it is kept in memory."""
        return self._provisioned

    def set_provisioned(self) -> None:
        write_atomic(self.layout.provisioned_marker, b"", mode=0o644)
        self._provisioned = True

    # ------------------------------------------------------------------ containers

    def guestos_of(self, c: Container) -> GuestOS | None:
        """The GuestOS the container runs (pinned by its config with signed configs), if any."""
        try:
            return for_container(self.guestos, c.config, self.signed_configs)
        except GuestOSUnavailable:
            return None

    def purge_obsolete_guestos(self) -> None:
        """At start, as the original: versions older than the newest complete one that no container
        uses are deleted."""
        used = in_use(self.guestos, (c.config for c in self.containers.all()), self.signed_configs)
        for gos in obsolete(self.guestos, used):
            log.info("GuestOS %s-%d is obsolete (no container uses it); purged", gos.name, gos.version)
            self.guestos.purge(gos)

    async def fetch_missing_guestos_images(self) -> None:
        """At start: the images missing from every GuestOS version a container runs, and from the
        newest version of each GuestOS a container uses, are fetched from its update server (the
        original's guestos_mgr_update_images). Failures are logged; the container's start then
        names the missing image."""
        wanted = {(g.name, g.version) for c in self.containers.all() if (g := self.guestos_of(c)) is not None}
        wanted |= {(g.name, g.version) for c in self.containers.all()
                   if (g := self.guestos.latest(c.config.guest_os)) is not None}
        for name, version in sorted(wanted):
            gos = self.guestos.get(name, version)
            if gos is None or gos.complete:
                continue
            try:
                await self.installer.fetch_missing(gos, self.device.update_base_url)
            except (InstallError, OSError) as e:
                log.error("GuestOS %s-%d stays incomplete: %s", name, version, e)

    def container_status(self, c: Container) -> ContainerStatus:
        gos = self.guestos_of(c)
        trust = gos.trust if gos is not None else ContainerTrust.UNSIGNED
        return c.status(c.config.guest_os, trust, self.cryptfs_mode(c))

    def cryptfs_mode(self, c: Container) -> int:
        """The dm mode of the container's writable images: what its last start used, or what the
        next one will use (as the original reports it; without touching the disk)."""
        return crypt_mode.status_mode(self.layout.container_dir(c.uuid), is_c0=c.is_c0,
                                      dm_unavailable=self.crypt_unavailable,
                                      has_key=c.is_c0 or self.keys.has_token(c))
