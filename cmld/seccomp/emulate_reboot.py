"""reboot(2) from a container, emulated (the container holds no CAP_SYS_BOOT).

In a PID namespace other than the host's, the kernel's reboot ends that namespace: RESTART and
RESTART2 make its init die as by SIGHUP (cmld restarts the container), HALT and POWER_OFF as by
SIGINT (it stops); every other command is EINVAL there. That is what busybox halt, poweroff and
reboot, and cservice's shutdown, rely on. The container cannot keep CAP_SYS_BOOT for it: in the
host's user namespace it would also allow kexec_load. So the filter notifies reboot to cmld,
which checks the call as the kernel would (the magic numbers, a command that ends a namespace)
and that the caller is the container's root with its capabilities (CAP_KILL effective), then
has `cmld.launcher.pidns_reboot` make the call inside the container's PID namespace.

One reboot runs at a time per listener: further calls wait for it and get its answer.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import os
import sys

from cmld.linux.process import LINUX_REBOOT_CMD_HALT, LINUX_REBOOT_CMD_POWER_OFF, LINUX_REBOOT_CMD_RESTART
from cmld.seccomp import notify
from cmld.seccomp.caller import caller_of
from cmld.seccomp.notify import Notification, Response
from cmld.seccomp.procfs import CAP_KILL

log = logging.getLogger(__name__)

MAGIC1 = 0xFEE1DEAD
MAGIC2 = (672274793, 85072278, 369367448, 537993216)
RESTART, RESTART2, HALT, POWER_OFF = 0x01234567, 0xA1B2C3D4, 0xCDEF0123, 0x4321FEDC
COMMANDS = {RESTART: ("restart", LINUX_REBOOT_CMD_RESTART), RESTART2: ("restart", LINUX_REBOOT_CMD_RESTART),
            HALT: ("halt", LINUX_REBOOT_CMD_HALT), POWER_OFF: ("power off", LINUX_REBOOT_CMD_POWER_OFF)}
HELPER_TIMEOUT = 30.0


class RebootEmulation:
    def __init__(self, listener_fd: int, container_name: str, init_pid: int, root_uid: int) -> None:
        self._fd = listener_fd
        self._name = container_name
        self._root_uid = root_uid
        try:
            self._pidfd = os.pidfd_open(init_pid)
        except OSError:  # init gone already: nothing left to reboot
            self._pidfd = -1
        self._running: asyncio.Future[Response] | None = None

    def close(self) -> None:
        if self._pidfd >= 0:
            os.close(self._pidfd)
            self._pidfd = -1

    def check(self, notif: Notification) -> Response | int:
        """An immediate answer, or the reboot command (the helper's) to carry out."""
        magic1, magic2, cmd = (a & 0xFFFFFFFF for a in notif.args[:3])
        if magic1 != MAGIC1 or magic2 not in MAGIC2 or cmd not in COMMANDS:
            return notify.error(errno.EINVAL)
        with caller_of(self._fd, notif) as caller:
            st = caller.status()
            if st.euid != self._root_uid or not st.has_cap(CAP_KILL):
                log.info("container %s: reboot by pid %d refused (not the container's root)", self._name, notif.pid)
                return notify.error(errno.EPERM)
            notify.check_valid(self._fd, notif.id)
        if self._pidfd < 0:
            return notify.error(errno.ESRCH)
        return COMMANDS[cmd][1]

    async def run(self, cmd: int) -> Response:
        """Carry out `cmd` (once: a call while one runs gets the running one's answer)."""
        if self._running is None:
            self._running = asyncio.ensure_future(self._helper(cmd))
        return await asyncio.shield(self._running)

    async def _helper(self, cmd: int) -> Response:
        what = next(name for name, c in COMMANDS.values() if c == cmd)
        log.info("container %s: reboot(2) from inside: %s", self._name, what)
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "cmld.launcher.pidns_reboot", str(self._pidfd), str(cmd),
            pass_fds=[self._pidfd], stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.PIPE, env={"PATH": "/usr/sbin:/usr/bin:/sbin:/bin"})
        try:
            _, err = await asyncio.wait_for(proc.communicate(), HELPER_TIMEOUT)
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            await proc.wait()
            err = b"no answer"
        if proc.returncode == 0:
            return notify.success(0)
        log.error("container %s: the %s asked from inside failed: %s", self._name, what,
                  err.decode(errors="replace").strip()[-300:] or f"exit {proc.returncode}")
        self._running = None  # a later call may try again
        return notify.error(errno.EPERM)
