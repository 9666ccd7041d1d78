"""The process behind a notification: its /proc directory, root, status and memory, every access
bracketed by the notification-id check, so a dead caller whose PID was reused never makes cmld act
on another process."""

from __future__ import annotations

import errno
import os
from collections.abc import Iterator
from contextlib import contextmanager, suppress

from cmld.seccomp import notify
from cmld.seccomp.notify import Notification
from cmld.seccomp.procfs import ProcStatus, parse_status


class Caller:
    """The thread blocked in a notified syscall, pinned by a /proc/<tid> directory fd that was
    checked against the notification id right after opening."""

    def __init__(self, listener_fd: int, notif: Notification) -> None:
        self.listener_fd = listener_fd
        self.notif = notif
        try:
            if notif.pid <= 0:  # not visible from cmld's PID namespace
                raise OSError(errno.ESRCH, "caller not visible")
            self.proc_fd = os.open(f"/proc/{notif.pid}", os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
        except OSError:
            # gone: no answer due; still there: answer (EPERM), or it would block forever
            notify.check_valid(listener_fd, notif.id)
            raise
        self._fds: list[int] = [self.proc_fd]
        try:
            notify.check_valid(listener_fd, notif.id)  # the PID was not reused before the open
        except BaseException:
            self.close()
            raise
        self._status: ProcStatus | None = None
        self._mem_fd = -1
        self._mem_writable = False

    def close(self) -> None:
        for fd in self._fds:
            with suppress(OSError):
                os.close(fd)
        self._fds.clear()

    def track(self, fd: int) -> int:
        self._fds.append(fd)
        return fd

    def open(self, name: str, flags: int) -> int:
        return self.track(os.open(name, flags | os.O_CLOEXEC, dir_fd=self.proc_fd))

    def status(self) -> ProcStatus:
        if self._status is None:
            fd = self.open("status", os.O_RDONLY)
            text = os.read(fd, 1 << 16).decode(errors="replace")
            self._status = parse_status(text)
        return self._status

    def _mem(self, writable: bool) -> int:
        if self._mem_fd < 0 or (writable and not self._mem_writable):
            self._mem_fd = self.open("mem", os.O_RDWR if writable else os.O_RDONLY)
            self._mem_writable = writable
            notify.check_valid(self.listener_fd, self.notif.id)
        return self._mem_fd

    def read_string(self, addr: int) -> str:
        raw = notify.read_caller_string(self.listener_fd, self.notif.id, self._mem(False), addr)
        return os.fsdecode(raw)

    def read(self, addr: int, size: int) -> bytes:
        return notify.read_caller_mem(self.listener_fd, self.notif.id, self._mem(False), addr, size)

    def write(self, addr: int, data: bytes) -> None:
        fd = self._mem(True)
        notify.check_valid(self.listener_fd, self.notif.id)
        notify.write_mem(fd, addr, data)


@contextmanager
def caller_of(listener_fd: int, notif: Notification) -> Iterator[Caller]:
    caller = Caller(listener_fd, notif)
    try:
        yield caller
    finally:
        caller.close()
