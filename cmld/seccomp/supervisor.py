"""Answers a container's seccomp notifications inside cmld's event loop (c_seccomp emulation):
receives each notification when the listener polls readable and dispatches it (`emulate_mknod`,
`emulate_time`, `emulate_sysinfo`, `emulate_module`); the caller's process is read through
`caller`, pure rules are in `procfs`.

mknod/mknodat of a device: created by cmld in the container, as the caller would have seen it, if
the caller holds CAP_MKNOD and the device is allowed for the container. Time syscalls: done by
cmld on CLOCK_REALTIME if the container may set the system time and the caller holds CAP_SYS_TIME.
reboot: the PID-namespace reboot, for the container's root (`emulate_reboot`). inotify_init and
inotify_init1 of a container without a user namespace: an instance made by the container's
inotify broker, charged to the container's own account (`emulate_inotify`). Everything else
continues in the kernel as if there were no filter.

Every path from the caller is resolved with openat2 RESOLVE_IN_ROOT against the caller's root, so
symlinks and `..` inside the container can never lead cmld outside it.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import os
import select
from collections.abc import Callable
from contextlib import suppress

from cml_common.logbudget import LogBudget
from cmld.cgroups.memory import MemoryUse
from cmld.linux import seccomp as linux_seccomp
from cmld.seccomp import notify
from cmld.seccomp.emulate_inotify import InotifyEmulation
from cmld.seccomp.emulate_mknod import MknodEmulation
from cmld.seccomp.emulate_module import ModuleEmulation
from cmld.seccomp.emulate_reboot import RebootEmulation
from cmld.seccomp.emulate_sysinfo import SysinfoEmulation
from cmld.seccomp.emulate_time import TimeEmulation
from cmld.seccomp.inotify_broker import InotifyBroker
from cmld.seccomp.module_policy import ModuleAllowList
from cmld.seccomp.notify import CallerGone, Notification, Response
from cmld.seccomp.procfs import (
    NR_ADJTIMEX,
    NR_CLOCK_ADJTIME,
    NR_CLOCK_SETTIME,
    NR_FINIT_MODULE,
    NR_INIT_MODULE,
    NR_INOTIFY_INIT,
    NR_INOTIFY_INIT1,
    NR_MKNOD,
    NR_MKNODAT,
    NR_REBOOT,
    NR_SETTIMEOFDAY,
    NR_SYSINFO,
)

log = logging.getLogger(__name__)


# ---------------------------------------------------------------------------- the supervisor


class SeccompSupervisor:
    """One container's listener fd, served from cmld's event loop."""

    def __init__(self, notify_fd: int, *, container_name: str, init_pid: int,
                 is_device_allowed: Callable[[str, int, int], bool], allow_system_time: bool,
                 uid_offset: int | None, log_budget: LogBudget | None = None,
                 on_denied: Callable[[int], None] | None = None,
                 memory: Callable[[], MemoryUse | None] = lambda: None,
                 procs: Callable[[], int | None] = lambda: None, modules: ModuleAllowList | None = None,
                 modules_off: str = "the container has no allow_module list",
                 inotify_broker: InotifyBroker | None = None) -> None:
        self._fd = notify_fd
        self.on_denied = on_denied  # told the syscall number of each refusal (the audit summary)
        self._name = container_name
        self._init_pid = init_pid
        self._is_device_allowed = is_device_allowed
        self._allow_system_time = allow_system_time
        self._uid_offset = uid_offset
        budget = log_budget or LogBudget(f"container {container_name}")
        self._budget = budget
        self._mknod = MknodEmulation(notify_fd, container_name, is_device_allowed, uid_offset, budget)
        self._time = TimeEmulation(notify_fd, container_name, allow_system_time, budget)
        self._reboot = RebootEmulation(notify_fd, container_name, init_pid, uid_offset or 0)
        self._inotify = (InotifyEmulation(notify_fd, container_name, inotify_broker, budget)
                         if inotify_broker is not None else None)
        self._tasks: set[asyncio.Task[None]] = set()
        self._sysinfo = SysinfoEmulation(notify_fd, container_name, memory, procs)
        self._modules = ModuleEmulation(notify_fd, container_name, modules, modules_off)
        self._loop: asyncio.AbstractEventLoop | None = None
        self.notifications = 0  # received so far (tests, diagnostics)

    def start(self, loop: asyncio.AbstractEventLoop) -> None:
        linux_seccomp.notif_sizes()  # fail here rather than on the first notification
        self._loop = loop
        loop.add_reader(self._fd, self._on_readable)

    def close(self) -> None:
        self._stop_reading()
        for task in self._tasks:
            task.cancel()
        self._tasks.clear()
        self._reboot.close()
        if self._fd >= 0:
            with suppress(OSError):
                os.close(self._fd)
            self._fd = -1

    def _stop_reading(self) -> None:
        if self._loop is not None and self._fd >= 0:
            with suppress(Exception):
                self._loop.remove_reader(self._fd)
        self._loop = None

    # -- event loop callback

    def _on_readable(self) -> None:
        try:
            self._serve_one()
        except Exception:
            log.exception("container %s: seccomp supervisor", self._name)

    def _serve_one(self) -> None:
        if self._fd < 0:
            return
        # RECV blocks when nothing is pending: receive only what poll reports as pending. Once every
        # process of the container is gone the fd reports only POLLHUP; stop watching it then.
        poller = select.poll()
        poller.register(self._fd, select.POLLIN)
        events = poller.poll(0)
        revents = events[0][1] if events else 0
        if not revents & select.POLLIN:
            if revents & (select.POLLHUP | select.POLLERR | select.POLLNVAL):
                log.debug("container %s (init %d): seccomp listener hung up, no process left", self._name,
                          self._init_pid)
                self._stop_reading()
            return
        try:
            notif = notify.recv(self._fd)
        except OSError as e:
            if e.errno in (errno.ENOENT, errno.EINTR):  # the caller died before we got to it
                return
            if self._budget.allow("seccomp"):
                log.error("container %s: seccomp receive: %s", self._name, e)
            return
        self.notifications += 1
        if notif.nr == NR_REBOOT and notif.arch == notify.AUDIT_ARCH_X86_64:
            self._serve_reboot(notif)
            return
        try:
            resp = self.handle(notif)
            if resp is None:  # answered already (an fd installed as the syscall's result)
                return
        except CallerGone:
            log.debug("container %s: caller %d of syscall %d went away", self._name, notif.pid, notif.nr)
            return
        except Exception:
            if self._budget.allow("seccomp"):
                log.exception("container %s: handling syscall %d of pid %d", self._name, notif.nr, notif.pid)
            resp = notify.error(errno.EPERM)
        self._answer(notif, resp)

    def _answer(self, notif: Notification, resp: Response) -> None:
        if self._fd < 0:
            return
        if resp.error and self.on_denied is not None:
            self.on_denied(notif.nr)
        try:
            notify.send(self._fd, notif.id, resp)
        except OSError as e:
            if e.errno == errno.ENOENT:
                log.debug("container %s: caller %d gone before the response", self._name, notif.pid)
            elif self._budget.allow("seccomp"):
                log.error("container %s: seccomp response: %s", self._name, e)

    def _serve_reboot(self, notif: Notification) -> None:
        """Checked now; carried out by a helper process, answered when it is done (the caller
        waits in the syscall meanwhile, and normally dies with its namespace)."""
        try:
            checked = self._reboot.check(notif)
        except CallerGone:
            return
        except Exception:
            log.exception("container %s: reboot by pid %d", self._name, notif.pid)
            checked = notify.error(errno.EPERM)
        if isinstance(checked, Response):
            self._answer(notif, checked)
            return
        assert self._loop is not None

        async def carry_out(cmd: int) -> None:
            try:
                resp = await self._reboot.run(cmd)
            except Exception:
                log.exception("container %s: reboot by pid %d", self._name, notif.pid)
                resp = notify.error(errno.EPERM)
            self._answer(notif, resp)

        task = self._loop.create_task(carry_out(checked))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # -- dispatch

    def handle(self, notif: Notification) -> Response | None:
        """The response to one notification (None: answered already); raises CallerGone if none
        is due."""
        if notif.arch != notify.AUDIT_ARCH_X86_64:  # the filter kills other ABIs; never emulate them
            return notify.error(errno.EPERM)
        if notif.nr in (NR_MKNOD, NR_MKNODAT):
            return self._mknod.handle(notif)
        if notif.nr in (NR_CLOCK_SETTIME, NR_CLOCK_ADJTIME, NR_ADJTIMEX, NR_SETTIMEOFDAY):
            return self._time.handle(notif)
        if notif.nr == NR_SYSINFO:
            return self._sysinfo.handle(notif)
        if notif.nr in (NR_FINIT_MODULE, NR_INIT_MODULE):
            return self._modules.handle(notif)
        if notif.nr in (NR_INOTIFY_INIT, NR_INOTIFY_INIT1) and self._inotify is not None:
            return self._inotify.handle(notif)
        return notify.continue_()
