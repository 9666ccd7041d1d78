"""One container's life: the start handshake, state machine, timers, stop, freeze, exit.

A start runs every module's `prepare`, spawns the launcher, and walks the original's handshake
(pid -> post_clone -> GO -> SUCCESS -> pre_exec -> GO -> exec). Any failure on the way kills what
exists, runs every module's `cleanup` and leaves the container STOPPED (ZOMBIE for a corrupted
volume), so nothing half-made survives a failed start.
"""

from __future__ import annotations

import asyncio
import logging
import shutil
import signal
from typing import Protocol

from cml_common.crashpoints import crash_point
from cml_common.logbudget import LogBudget
from cml_common.messages.container_pb2 import ContainerState as S
from cml_common.messages.control_pb2 import DaemonToController as D
from cml_common.messages.guestos_pb2 import GuestOSConfig
from cmld.cgroups.driver import ContainerCgroup
from cmld.containers.container import Container
from cmld.errors import LaunchError, StateError
from cmld.launcher.spec import ERR_VOL_CORRUPTED
from cmld.modules.base import Module, StartError
from cmld.modules.context import StartContext
from cmld.modules.service import ServiceModule
from cmld.modules.settings import RuntimeSettings
from cmld.runtime.freezer import Freezer
from cmld.runtime.launch_spec import base_spec, log_init_notes
from cmld.runtime.lifecycle_state import LifecycleState
from cmld.runtime.reaper import REAPER
from cmld.runtime.records import RecordStore
from cmld.runtime.spawn import InitWatcher, Launcher
from cmld.runtime.stopping import KILL_RETRY, run_cleanups, run_stop_hooks
from cmld.runtime.transitions import STARTABLE, STOPPABLE

log = logging.getLogger(__name__)


class CompartmentHost(Protocol):
    """What a compartment needs from the runtime that owns it (the registry)."""

    settings: RuntimeSettings
    records: RecordStore

    def guestos_config(self, c: Container) -> GuestOSConfig:
        """The GuestOS the container runs; StartError says why there is none."""

    def build_modules(self, c: Container) -> list[Module]: ...

    def on_stopped(self, comp: Compartment) -> None: ...


class Compartment(LifecycleState):
    def __init__(self, container: Container, runtime: CompartmentHost) -> None:
        super().__init__(container)
        self.runtime = runtime
        self.ctx: StartContext | None = None
        self.modules: list[Module] = []
        self.watcher: InitWatcher | None = None
        self._exit_task: asyncio.Task[None] | None = None
        self._start_lock = asyncio.Lock()
        self._stopped_event = asyncio.Event()
        self._stopped_event.set()
        self.freezer = Freezer(runtime.settings.freeze_timeout)
        self.last_error = ""
        self.log_budget = LogBudget(f"container {container.name}")
        self._bg: set[asyncio.Future[None]] = set()
        self._launcher: Launcher | None = None
        # Set by terminate(): a reboot from inside that races with it must not restart the container.
        self._no_restart = False
        self.corrupted = ""  # a volume found tampered with (runtime/corruption.py): it ends as ZOMBIE

    def module(self, cls: type[Module]) -> Module | None:
        return next((m for m in self.modules if isinstance(m, cls)), None)

    # ------------------------------------------------------------------ start

    def check_startable(self) -> None:
        """Raises the refusal a start would get now (checked before a token PIN is spent)."""
        if self.state == S.ZOMBIE:
            raise StateError("container is ZOMBIE; wipe it first", D.CONTAINER_START_EINTERNAL)
        if self.state not in STARTABLE:
            raise StateError(f"container is {S.Name(self.state)}", D.CONTAINER_START_EEXIST)
        self.runtime.guestos_config(self.container)  # raises StartError if there is none to run

    def check_stoppable(self) -> None:
        if self.state not in STOPPABLE:
            raise StateError(f"container is {S.Name(self.state)}", D.CONTAINER_STOP_FAILED_NOT_RUNNING)

    async def start(self, *, setup: bool = False, key: bytearray | None = None) -> None:
        """Returns once init runs (BOOTING/SETUP); raises StateError or StartError with the reason
        otherwise. `key` (the unwrapped container key) is wiped when this returns, whatever happened."""
        try:
            async with self._start_lock:
                self.check_startable()
                self.last_error = self.corrupted = ""
                self._stopped_event.clear()
                self.set_state(S.STARTING)
                try:
                    await self._start(setup, key)
                except BaseException as e:
                    await self._abort(e)
                    raise StartError(self.last_error, corrupted=self.state == S.ZOMBIE) from None
        finally:
            if key is not None:
                key[:] = bytes(len(key))

    async def _start(self, setup: bool, key: bytearray | None = None) -> None:
        gos = self.runtime.guestos_config(self.container)
        spec = base_spec(self.container, gos, self.runtime.settings, setup)
        ctx = StartContext(self.container, gos, self.runtime.settings, spec, setup_mode=setup, key=key,
                           log_budget=self.log_budget)
        self.ctx = ctx
        self.modules = self.runtime.build_modules(self.container)
        # The record exists before anything else does, and is rewritten as the start makes
        # more (cgroups, init, the netns binding): a cmld killed at any point leaves enough
        # for the next one to clean up.
        self.runtime.records.write(ctx)
        crash_point("start.record")
        ctx.run_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        for d in ("root", "work"):
            (ctx.run_dir / d).mkdir(exist_ok=True, mode=0o700)
        for m in self.modules:
            await m.prepare(ctx)
        self.runtime.records.write(ctx)
        crash_point("start.prepared")
        launcher = await Launcher.spawn(spec, ctx.run_dir / "launcher.log")
        self._launcher = launcher
        crash_point("start.launcher")
        msg, _ = await launcher.recv("pid")
        ctx.init_pid = int(msg["pid"])
        self.watcher = InitWatcher(ctx.init_pid)
        await launcher.reap()
        self._launcher = None
        self.runtime.records.write(ctx)
        crash_point("start.init_forked")
        for m in self.modules:
            await m.post_clone(ctx)
        self.runtime.records.write(ctx)
        crash_point("start.post_clone")
        await launcher.chan.send({"type": "go"})
        msg, fds = await launcher.recv("success")
        log_init_notes(self.container.name, spec, msg)
        names = msg.get("fds", [])
        ctx.received_fds = dict(zip(names, fds, strict=False))
        for m in self.modules:
            await m.pre_exec(ctx)
        ctx.close_received_fds()  # modules took what they use
        await launcher.chan.send({"type": "go"})
        closed, _ = await launcher.chan.recv()
        if closed is not None:  # exec failed: the child reports and exits
            raise LaunchError(str(closed.get("message", "init could not be executed")))
        launcher.chan.close()
        self.set_state(S.SETUP if setup else S.BOOTING)
        self._exit_task = asyncio.ensure_future(self._wait_exit())
        crash_point("start.exec")
        for m in self.modules:
            await m.post_exec(ctx)
        if self.state == S.BOOTING:
            if self.module(ServiceModule) is not None:
                self._arm(self.runtime.settings.boot_timeout, "boot", self.kill)
            else:
                self.set_state(S.RUNNING)

    async def _abort(self, err: BaseException) -> None:
        if isinstance(err, StartError | LaunchError):
            self.last_error = str(err)
        elif isinstance(err, OSError):
            self.last_error = f"{err.strerror or err}" + (f": {err.filename}" if err.filename else "")
        else:
            self.last_error = f"{type(err).__name__}: {err}"
        corrupted = (isinstance(err, StartError) and err.corrupted) or (
            isinstance(err, LaunchError) and err.code == ERR_VOL_CORRUPTED)
        log.error("container %s: start failed: %s", self.container.name, self.last_error)
        try:
            await self._undo_start()
        except Exception:
            log.exception("container %s: undoing the failed start", self.container.name)
        finally:
            self.set_state(S.ZOMBIE if corrupted else S.STOPPED)
            self._stopped_event.set()

    async def _undo_start(self) -> None:
        launcher = self._launcher
        if launcher is not None:
            launcher.kill()
            launcher.chan.close()
            await launcher.reap()
            self._launcher = None
        if self.watcher is not None:
            self._kill_all()
            try:
                await asyncio.wait_for(asyncio.shield(self.watcher.exited), 10)
            except TimeoutError:
                log.error("container %s: init %d did not die", self.container.name, self.watcher.pid)
            self.watcher.close()
            self.watcher = None
        await self._cleanup(rebooting=False)

    # ------------------------------------------------------------------ exit

    async def _wait_exit(self) -> None:
        assert self.watcher is not None
        how, status = await self.watcher.exited
        self._disarm()
        pid = self.watcher.pid
        self.watcher.close()
        self.watcher = None
        rebooting = how == "signal" and status == signal.SIGHUP and self.state != S.SHUTDOWN and not self.corrupted
        oom = self.oom_kills()
        what = f"exit code {status}" if how == "exit" else f"signal {signal.Signals(status).name}"
        log.info("container %s: init %d ended (%s%s)", self.container.name, pid, what,
                 f", {oom} OOM kill(s)" if oom else "")
        crash_point("stop.init_exited")
        # Whatever init left behind in its cgroup goes with it.
        await asyncio.to_thread(self.kill_cgroup)
        if rebooting:
            self.set_state(S.REBOOTING)
        await self._cleanup(rebooting=rebooting)
        crash_point("stop.cleaned")
        if rebooting and self._no_restart:
            self._no_restart = False
            self.set_state(S.STOPPED)
            self.container.started_monotonic = None
            self._stopped_event.set()
            self.runtime.on_stopped(self)
            return
        if rebooting:
            log.info("container %s: rebooting", self.container.name)
            try:
                await self.start()
            except StartError as e:
                log.error("container %s: restart after reboot failed: %s", self.container.name, e)
            return
        self.set_state(S.STOPPED)
        self.container.started_monotonic = None
        self._stopped_event.set()
        self.runtime.on_stopped(self)

    async def _cleanup(self, rebooting: bool) -> None:
        ctx = self.ctx
        if ctx is None:
            return
        await run_cleanups(self.container.name, ctx, self.modules, rebooting)
        crash_point("stop.modules_cleaned")
        ctx.close_received_fds()
        self.runtime.records.remove(ctx)
        shutil.rmtree(ctx.run_dir, ignore_errors=True)
        self.ctx = None
        self.modules = []

    # ------------------------------------------------------------------ stop, kill, freeze

    def _kill_all(self) -> None:
        """SIGKILL to init ends its PID namespace and with it every process of the container;
        the cgroup sweep (in a thread: it waits, and the loop must stay free to reap init)
        catches anything that was not in the namespace, such as an exec session."""
        if self.watcher is not None:
            self.watcher.signal(signal.SIGKILL)
        task = asyncio.ensure_future(asyncio.to_thread(self.kill_cgroup))
        self._bg.add(task)
        task.add_done_callback(self._bg.discard)

    def kill(self) -> None:
        """SIGKILL to init and the whole cgroup; repeated every KILL_RETRY seconds until init is
        gone, so a stop ends whatever the container does."""
        log.warning("container %s: killing", self.container.name)
        self._kill_all()
        if self._exit_task is not None and not self._exit_task.done():
            self._arm(KILL_RETRY, "kill", self._kill_again)

    def _kill_again(self) -> None:
        pid = self.watcher.pid if self.watcher is not None else 0
        log.error("container %s: init %d is still there %g s after SIGKILL; killing its cgroup again",
                  self.container.name, pid, KILL_RETRY)
        REAPER.poke()
        self.kill()

    async def stop(self) -> None:
        self.check_stoppable()
        ctx = self.ctx
        assert ctx is not None
        self.set_state(S.SHUTDOWN)
        self._arm(self.runtime.settings.stop_timeout, "stop", self.kill)
        crash_point("stop.shutdown")
        await self._stop_hooks(ctx, self.modules)

    async def _stop_hooks(self, ctx: StartContext, modules: list[Module]) -> None:
        """Each module's stop hook in order until one takes care of it (the service's SHUTDOWN, then
        `halt`); if none can, the container is killed."""
        if await run_stop_hooks(self.container.name, ctx, modules):
            return
        if self.state == S.SHUTDOWN:
            log.warning("container %s: no clean way to stop it; killing", self.container.name)
            self.kill()

    async def terminate(self, timeout: float) -> bool:
        """Kill the container whatever it is doing (remove, wipe: its data goes anyway, as the
        original's container_kill) and wait until it is STOPPED; False if it did not end in time.
        A start in progress is let finish first, so there is something to kill."""
        self._no_restart = True
        try:
            async with asyncio.timeout(timeout):
                async with self._start_lock:
                    pass
                if self.state in (S.FROZEN, S.FREEZING):
                    await self.unfreeze()
                if self.container.is_active:
                    self.kill()
                return await self.wait_stopped(None)
        except TimeoutError:
            return False
        finally:
            if not self.container.is_active:
                self._no_restart = False

    async def continue_stop(self, after: Module) -> None:
        """A stop hook that had taken care of the stop found it did not work (the service left
        after SHUTDOWN): the hooks after it get their turn, then the kill, as in `stop`."""
        ctx = self.ctx
        if self.state != S.SHUTDOWN or ctx is None or after not in self.modules:
            return
        await self._stop_hooks(ctx, self.modules[self.modules.index(after) + 1:])

    async def abandon(self) -> None:
        """cmld exits and this container did not end even after SIGKILL: release what cmld holds
        for it anyway (its cgroups are swept and removed, the netns binding, the run dir and the
        record go), each step bounded, so nothing of it outlives cmld on the host."""
        log.error("container %s: still %s as cmld exits; releasing what it holds", self.container.name,
                  S.Name(self.state))
        self._disarm()
        if self._exit_task is not None:
            self._exit_task.cancel()
            self._exit_task = None
        if self.watcher is not None:
            self.watcher.close()
            self.watcher = None
        await asyncio.to_thread(self.kill_cgroup)
        await self._cleanup(rebooting=False)
        self.set_state(S.STOPPED)
        self._stopped_event.set()

    async def wait_stopped(self, timeout: float | None = None) -> bool:
        try:
            await asyncio.wait_for(self._stopped_event.wait(), timeout)
        except TimeoutError:
            return False
        return True

    async def freeze(self) -> bool:
        """True once FROZEN; False if not frozen in time (thawed again). Only RUNNING or SETUP can
        be frozen; FREEZING/FROZEN count as done (the original's answers)."""
        return await self.freezer.freeze(self)

    async def unfreeze(self) -> bool:
        return await self.freezer.unfreeze(self)

    def boot_completed(self) -> None:
        if self.state == S.BOOTING:
            self._disarm()
            self.set_state(S.RUNNING)

    # ------------------------------------------------------------------ what the modules made

    @property
    def cgroup(self) -> ContainerCgroup | None:
        return self.ctx.cgroup if self.ctx is not None else None

    def kill_cgroup(self) -> None:
        """SIGKILL to everything in the container's cgroup (runs in a thread: it waits)."""
        why = self.cgroup.sweep() if self.cgroup is not None else ""
        if why:
            log.warning("container %s: killing its cgroup: %s", self.container.name, why)

    def oom_kills(self) -> int:
        return self.cgroup.oom_kills() if self.cgroup is not None else 0
