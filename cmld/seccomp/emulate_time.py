"""The clock-setting calls, emulated (the original's c_seccomp): done by cmld on CLOCK_REALTIME
only if the container may set the system time (`allow_system_time`) and the caller holds
CAP_SYS_TIME; other clocks and the timezone are refused."""

from __future__ import annotations

import errno
import logging
import os
import struct
import time

from cml_common.logbudget import LogBudget
from cmld.linux import clock
from cmld.seccomp import notify
from cmld.seccomp.caller import Caller, caller_of
from cmld.seccomp.notify import CallerGone, Notification, Response
from cmld.seccomp.procfs import (
    CAP_SYS_TIME,
    CLOCK_REALTIME,
    NR_CLOCK_ADJTIME,
    NR_CLOCK_SETTIME,
    NR_SETTIMEOFDAY,
    SYSCALL_NAMES,
    int32,
)

log = logging.getLogger(__name__)


class TimeEmulation:
    def __init__(self, listener_fd: int, container_name: str, allow_system_time: bool,
                 budget: LogBudget | None = None) -> None:
        self._fd = listener_fd
        self._name = container_name
        self._allow_system_time = allow_system_time
        self._budget = budget or LogBudget(f"container {container_name}")

    def _note(self, fmt: str, *args: object) -> None:
        """One line about a call, within the container's 'clock' log budget."""
        if self._budget.allow("clock"):
            log.info("container %s: " + fmt, self._name, *args)

    def handle(self, notif: Notification) -> Response:
        call = SYSCALL_NAMES[notif.nr]
        if not self._allow_system_time:
            self._note("%s by pid %d denied (system time not allowed)", call, notif.pid)
            return notify.error(errno.EPERM)
        with caller_of(self._fd, notif) as caller:
            if not caller.status().has_cap(CAP_SYS_TIME):
                self._note("%s by pid %d denied (caller lacks CAP_SYS_TIME)", call, notif.pid)
                return notify.error(errno.EPERM)
            try:
                resp = self._do_set_time(caller, notif)
            except CallerGone:
                raise
            except OSError as e:
                resp = notify.error(e.errno or errno.EPERM)
            self._note("%s by pid %d: %s", call, notif.pid, "done" if not resp.error else os.strerror(-resp.error))
            return resp

    @staticmethod
    def _do_set_time(caller: Caller, notif: Notification) -> Response:
        args = notif.args
        if notif.nr == NR_CLOCK_SETTIME:
            if int32(args[0]) != CLOCK_REALTIME:
                return notify.error(errno.EINVAL)
            sec, nsec = struct.unpack("=qq", caller.read(args[1], 16))
            if sec < 0 or not 0 <= nsec < 1_000_000_000:
                return notify.error(errno.EINVAL)
            time.clock_settime_ns(time.CLOCK_REALTIME, sec * 1_000_000_000 + nsec)
            return notify.success(0)
        if notif.nr == NR_SETTIMEOFDAY:
            if args[1]:  # the kernel's timezone is the host's, not the container's
                return notify.error(errno.EPERM)
            if not args[0]:
                return notify.success(0)
            sec, usec = struct.unpack("=qq", caller.read(args[0], 16))
            if sec < 0 or not 0 <= usec < 1_000_000:
                return notify.error(errno.EINVAL)
            time.clock_settime_ns(time.CLOCK_REALTIME, sec * 1_000_000_000 + usec * 1000)
            return notify.success(0)
        # adjtimex(buf) / clock_adjtime(CLOCK_REALTIME, buf): run it here, hand back the struct
        if notif.nr == NR_CLOCK_ADJTIME:
            if int32(args[0]) != CLOCK_REALTIME:
                return notify.error(errno.EPERM)
            addr = args[1]
        else:
            addr = args[0]
        ret, raw = clock.clock_adjtime_realtime(caller.read(addr, clock.TIMEX_SIZE))
        if ret < 0:
            return notify.error(-ret)
        caller.write(addr, raw)
        return notify.success(ret)
