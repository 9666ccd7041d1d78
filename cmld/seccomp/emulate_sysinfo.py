"""sysinfo(2), emulated (the original's c_seccomp): memory and swap are the container's cgroup
(its ram_limit as total), uptime is the container's (its time namespace's boot time), procs are
the container's tasks; so `free` (busybox calls sysinfo) shows the container, not the host.
The load averages stay the host's (the original takes them from lxcfs)."""

from __future__ import annotations

import errno
import logging
import os
import time
from collections.abc import Callable

from cmld.cgroups.memory import MemoryUse, host_meminfo, sysinfo_bytes, view
from cmld.seccomp import notify
from cmld.seccomp.caller import Caller, caller_of
from cmld.seccomp.notify import CallerGone, Notification, Response

log = logging.getLogger(__name__)
SI_LOAD_SHIFT = 16


def boottime_offset(caller: Caller) -> int:
    """Seconds the caller's time namespace adds to CLOCK_BOOTTIME (negative for a container)."""
    try:
        fd = caller.open("timens_offsets", os.O_RDONLY)
    except OSError:
        return 0
    for line in os.read(fd, 4096).decode(errors="replace").splitlines():
        parts = line.split()
        if len(parts) == 3 and parts[0] in ("boottime", "7"):  # name, or the clock id on old kernels
            return int(parts[1])
    return 0


class SysinfoEmulation:
    def __init__(self, listener_fd: int, container_name: str, memory: Callable[[], MemoryUse | None],
                 procs: Callable[[], int | None]) -> None:
        self._fd = listener_fd
        self._name = container_name
        self._memory = memory
        self._procs = procs

    def handle(self, notif: Notification) -> Response:
        use = self._memory()
        if use is None:
            return notify.continue_()  # no memory controller: the kernel's own answer
        v = view(use, host_meminfo())
        loads = tuple(int(x * (1 << SI_LOAD_SHIFT)) for x in os.getloadavg())
        with caller_of(self._fd, notif) as caller:
            uptime = int(time.clock_gettime(time.CLOCK_BOOTTIME)) + boottime_offset(caller)
            data = sysinfo_bytes(v, uptime=max(uptime, 0), loads=(loads[0], loads[1], loads[2]),
                                 procs=self._procs() or 1)
            try:
                caller.write(notif.args[0], data)
            except CallerGone:
                raise
            except OSError as e:
                return notify.error(e.errno or errno.EFAULT)
        return notify.success(0)
