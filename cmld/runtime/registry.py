"""The registry of compartments: one per container, created on demand; crash recovery at start,
autostart (c0 first), device reboot and shutdown."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import select
import shutil
import signal
import time
from collections.abc import Awaitable, Callable
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING

from cml_common.messages.container_pb2 import ContainerState as S
from cml_common.messages.guestos_pb2 import GuestOSConfig
from cml_common.paths import C0_UUID
from cmld import linux
from cmld.audit.auditor import Auditor
from cmld.cgroups.detect import detect
from cmld.cgroups.driver import CgroupDriver
from cmld.clients.tpm2d import Tpm2dMeasurements
from cmld.containers.container import Container
from cmld.crypt import recovery as dm_recovery
from cmld.errors import StartError
from cmld.guestos.select import GuestOSUnavailable, for_container
from cmld.modules.base import Module
from cmld.modules.control_socket import ServeControl
from cmld.modules.devices import DeviceAssignments
from cmld.modules.fifos import FifoBoard
from cmld.modules.network import unbind_netns
from cmld.modules.order import ModuleDeps, container_modules
from cmld.modules.settings import RuntimeSettings
from cmld.modules.usb_hub import HotplugHub
from cmld.net.fabric import NetFabric
from cmld.runtime.audit_observer import observe_transition
from cmld.runtime.compartment import Compartment
from cmld.runtime.corruption import CorruptionMonitor
from cmld.runtime.reaper import REAPER
from cmld.runtime.records import RecordStore

if TYPE_CHECKING:
    from cmld.guestos.store import GuestOSStore

log = logging.getLogger(__name__)


class Runtime:
    def __init__(self, settings: RuntimeSettings, guestos: GuestOSStore) -> None:
        self.settings = settings
        self.guestos = guestos
        self.records = RecordStore(settings.run_dir)
        self.assignments = DeviceAssignments()
        self.fifos = FifoBoard(settings.hosted, self._c0_pid)
        self.hotplug = HotplugHub(settings.sysfs, settings.uevent_netns)
        self.net = NetFabric(settings.run_dir, settings.hosted, settings.nic_kinds)
        self.compartments: dict[str, Compartment] = {}
        self.corruption = CorruptionMonitor(self.compartments)  # tampered volumes (kernel log)
        self.driver: CgroupDriver | None = None
        self.unavailable = ""
        # Set by cmld's main: how c0's control socket is served, and what happens once c0 is
        # down on a device (power off, or end cmld where there is no systemd to do it).
        self.serve_control: ServeControl | None = None
        self.tpm = Tpm2dMeasurements(settings.tpm2d_socket) if settings.tpm2d_socket is not None else None
        self.on_c0_down: Callable[[], Awaitable[None]] | None = None
        self.on_c0_up: Callable[[], None] | None = None  # c0 reached RUNNING at boot (the A/B update's confirmation)
        self.audit: Auditor | None = None  # set by cmld's main when auditing is on
        self._shutting_down = False
        self._c0_down_task: asyncio.Task[None] | None = None
        # REBOOT_DEVICE asked for the device to go down (reboot, not power off) once all is stopped.
        self.device_reboot = False

    def setup(self) -> None:
        """Become the subreaper of container inits (and reap every orphan that brings: see
        `reaper`) and find the cgroup hierarchy. Called in the event loop."""
        linux.prctl(linux.PR_SET_CHILD_SUBREAPER, 1)
        REAPER.start(asyncio.get_running_loop())
        self.settings.run_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        try:
            self.driver = detect()
        except (OSError, RuntimeError) as e:
            self.unavailable = f"no usable cgroup hierarchy: {e}"
            log.error("container runtime unavailable: %s", self.unavailable)
            return
        log.info("container runtime: cgroup v%d, run dir %s", self.driver.version, self.settings.run_dir)
        if not self.settings.crypt_unavailable:
            self.corruption.start()

    # ------------------------------------------------------------------ compartments

    def compartment(self, c: Container) -> Compartment:
        comp = self.compartments.get(c.uuid)
        if comp is None or comp.container is not c:
            comp = Compartment(c, self)
            if c.is_c0:
                comp.observers.append(self._watch_c0)
            comp.observers.append(partial(observe_transition, comp))
            self.compartments[c.uuid] = comp
        return comp

    def _c0_pid(self) -> int | None:
        """c0's init while c0 runs (the other end of every FIFO)."""
        comp = self.compartments.get(C0_UUID)
        if comp is None or comp.ctx is None or not comp.container.is_active:
            return None
        return comp.ctx.init_pid or None

    def forget(self, uuid: str) -> None:
        """A removed container: its (stopped) compartment goes too."""
        comp = self.compartments.get(uuid)
        if comp is not None and not comp.container.is_active:
            del self.compartments[uuid]

    def _watch_c0(self, c: Container, old: int, new: int) -> None:
        """c0 down (halted inside, or crashed) on a device: nothing may run without the management
        container, so every other container is stopped, then the device goes down (the original)."""
        if new not in (S.STOPPED, S.ZOMBIE) or self.settings.hosted or self._shutting_down:
            return
        if old == S.STARTING:
            return  # a start that failed: cmld stays up so the operator can see why (autostart logs it)
        if self._c0_down_task is None or self._c0_down_task.done():
            log.warning("c0 is %s: stopping every other container", S.Name(new))
            self._c0_down_task = asyncio.ensure_future(self._c0_down())

    async def _c0_down(self) -> None:
        await self.shutdown(only_others=True)
        if self.on_c0_down is not None:
            await self.on_c0_down()

    def guestos_config(self, c: Container) -> GuestOSConfig:
        try:
            return for_container(self.guestos, c.config, self.settings.signed_configs).config
        except GuestOSUnavailable as e:
            raise StartError(str(e)) from None

    def build_modules(self, c: Container) -> list[Module]:
        assert self.driver is not None
        comp = self.compartment(c)
        deps = ModuleDeps(self.settings, self.driver, self.assignments, self.serve_control, self.tpm,
                          corruption=self.corruption, fifos=self.fifos, hotplug=self.hotplug, net=self.net,
                          audit=self.audit)
        return container_modules(c, deps, comp.boot_completed, comp.continue_stop)

    def on_stopped(self, comp: Compartment) -> None:
        c = comp.container
        if comp.corrupted:
            comp.set_state(S.ZOMBIE)  # a tampered volume: only a wipe brings it back
        if c.pending_config is not None:
            c.config = c.pending_config
            c.pending_config = None
            log.info("container %s: updated config applied", c.name)

    # ------------------------------------------------------------------ daemon start and stop

    def recover(self) -> None:
        """Containers a previous cmld left running (it crashed or was killed) are stopped and
        everything they held is released: processes, cgroups, the netns binding, run dirs.
        cmld cannot re-adopt them: their sync and service sockets died with the old daemon."""
        records = self.records.all()
        released: list[dict[str, object]] = []
        for rec in records:
            uuid = rec["uuid"]
            log.warning("container %s (%s) was left by a previous cmld; stopping it and cleaning up",
                        rec.get("name", "?"), uuid)
            try:
                self._release(rec)
                released.append(rec)
            except Exception:  # the record stays: the next cmld tries again
                log.exception("container %s: releasing what it left", uuid)
        # Their dm devices (and loop devices) once every process is gone: nothing holds them then.
        dm_recovery.remove_stale({str(r["uuid"]) for r in records},
                                 [self.settings.containers_dir, self.settings.guestos_dir])
        for rec in released:
            try:
                self._forget(rec)
            except Exception:
                log.exception("container %s: releasing what it left", rec["uuid"])

    def _release(self, rec: dict[str, object]) -> None:
        """The processes, the cgroup, the netns binding and an unfinished mkfs of a left-over container."""
        uuid = str(rec["uuid"])
        self._kill_pid(int(str(rec.get("init_pid") or 0)), uuid)
        if self.driver is not None:
            cg = self.driver.open_existing(uuid)
            if cg is not None:
                try:
                    cg.kill_all()
                finally:
                    cg.remove()
        for netns in {str(rec.get("netns") or ""), str(self.settings.netns_dir / uuid)} - {""}:
            unbind_netns(netns)
        # An EMPTY image whose mkfs the old cmld never saw finish is incomplete.
        for tmp in (self.settings.containers_dir / uuid).glob("*.img.tmp"):
            tmp.unlink(missing_ok=True)

    def _forget(self, rec: dict[str, object]) -> None:
        """After its dm devices went: its images detached, its run dir and record removed."""
        uuid = str(rec["uuid"])
        self._wait_images_released(uuid)
        run_dir = Path(str(rec.get("run_dir", "")))
        if run_dir.is_relative_to(self.settings.run_dir):
            shutil.rmtree(run_dir, ignore_errors=True)
        self.records.path(uuid).unlink(missing_ok=True)

    @staticmethod
    def _kill_pid(pid: int, uuid: str) -> None:
        """SIGKILL a left-over init and wait (5 s at most) until it has exited. Its pidfd polls
        readable then, also while it stays a zombie of whichever process inherited it. Only if
        that pid is still in the container's cgroup: it may have ended and been reused."""
        if pid <= 1:
            return
        try:
            fd = os.pidfd_open(pid)
        except OSError:
            return
        try:
            try:
                mine = uuid in Path(f"/proc/{pid}/cgroup").read_text()
            except OSError:
                mine = False
            if not mine:
                return
            with contextlib.suppress(OSError):
                linux.pidfd_send_signal(fd, signal.SIGKILL)
            poller = select.poll()
            poller.register(fd, select.POLLIN)
            if not poller.poll(5000):
                log.error("left-over init %d did not end within 5 s of SIGKILL", pid)
            with contextlib.suppress(ChildProcessError, OSError):
                os.waitid(os.P_PIDFD, fd, os.WEXITED | os.WNOHANG)
        finally:
            os.close(fd)

    def _wait_images_released(self, uuid: str, timeout: float = 5.0) -> None:
        """The kernel detaches the loop devices of a dead container's images a moment after its
        mount namespace went; a new start must not meet them attached."""
        images = [str(p) for p in (self.settings.containers_dir / uuid).glob("*.img")]
        deadline = time.monotonic() + timeout
        while images and (left := linux.loops_of(images)):
            if time.monotonic() > deadline:
                log.warning("container %s: %s still attached after recovery", uuid, ", ".join(left))
                return
            time.sleep(0.02)

    async def autostart(self, containers: list[Container]) -> None:
        """c0 first, then every container with allow_autostart."""
        if self.driver is None:
            return
        c0 = next((c for c in containers if c.is_c0), None)
        if c0 is not None and not await self._start_c0(c0) and not self.settings.hosted:
            log.critical("c0 did not come up: no other container is started")
            return
        for c in containers:
            if c.config.allow_autostart and not c.is_c0:
                try:
                    await self.compartment(c).start()
                except Exception as e:
                    log.error("autostart of %s failed: %s", c.name, e)

    async def _start_c0(self, c0: Container) -> bool:
        """Start c0 and wait until it is RUNNING: the others come after it (it is their router and
        where the operator works), as in the original."""
        comp = self.compartment(c0)
        try:
            await comp.start()
        except Exception as e:
            log.error("starting c0 failed: %s", e)
            return False
        deadline = time.monotonic() + self.settings.boot_timeout + 1
        while c0.state in (S.STARTING, S.BOOTING) and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        if c0.state != S.RUNNING:
            log.error("c0 is %s, not RUNNING", S.Name(c0.state))
            return False
        if self.on_c0_up is not None:
            await asyncio.to_thread(self.on_c0_up)
        return True

    async def shutdown(self, timeout: float | None = None, *, only_others: bool = False) -> None:
        """Stop every container (when cmld itself stops), killing those that do not end in time;
        with only_others, every container but c0."""
        if not only_others:
            self._shutting_down = True
        await self.stop_all(timeout, only_others=only_others)
        if only_others:
            return
        # A container that did not end even after SIGKILL: cmld still releases what it holds.
        for comp in list(self.compartments.values()):
            if comp.container.is_active:
                try:
                    await comp.abandon()
                except Exception:
                    log.exception("container %s: releasing it at exit", comp.container.name)
        REAPER.stop()

    async def reboot_device(self) -> None:
        """REBOOT_DEVICE: c0 is stopped first (on a device, c0 going down stops the others and
        then takes the device down), then every other container, as the original."""
        self.device_reboot = True
        c0 = next((comp for comp in self.compartments.values()
                   if comp.container.is_c0 and comp.container.is_active), None)
        if c0 is not None and not self.settings.hosted:
            await self.stop_all(only=[c0])
            return  # _watch_c0 stops the others and calls on_c0_down
        if c0 is not None:
            await self.stop_all(only=[c0])
        await self.stop_all()
        if not self.settings.hosted and self.on_c0_down is not None:
            await self.on_c0_down()

    async def stop_all(self, timeout: float | None = None, *, only_others: bool = False,
                       only: list[Compartment] | None = None) -> None:
        """Stop the active containers (or those in `only`), killing those that do not end in time."""
        candidates = only if only is not None else list(self.compartments.values())
        active = [comp for comp in candidates
                  if comp.container.is_active and not (only_others and comp.container.is_c0)]
        async def begin(comp: Compartment) -> None:
            if comp.state in (S.RUNNING, S.BOOTING, S.SETUP):
                try:
                    await comp.stop()
                except Exception as e:
                    log.warning("stopping %s: %s", comp.container.name, e)
            elif comp.state in (S.FROZEN, S.FREEZING):
                await comp.unfreeze()
                comp.kill()
            else:
                comp.kill()

        async def end(comp: Compartment, wait: float) -> None:
            if not await comp.wait_stopped(wait):
                comp.kill()
                await comp.wait_stopped(5)

        # All at once: each stop may take its hooks' time (halt waits up to 5 s).
        await asyncio.gather(*(begin(comp) for comp in active))
        wait = self.settings.stop_timeout + 2 if timeout is None else timeout
        await asyncio.gather(*(end(comp, wait) for comp in active))
