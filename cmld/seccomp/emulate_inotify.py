"""inotify_init / inotify_init1 of a container without a user namespace, answered with an instance
made by the container's inotify broker (`inotify_broker`) and installed in the caller with
SECCOMP_IOCTL_NOTIF_ADDFD: the kernel charges it, and the watches added to it, to the container's
own account, so the container can never use up host root's `fs.inotify.max_user_*`.

For the caller nothing differs from the kernel's own call: the same flags (IN_NONBLOCK on the
instance, IN_CLOEXEC on its fd), EINVAL for any other flag, EMFILE when its budget of instances
is used up (the kernel's answer at the per-user limit) or its own RLIMIT_NOFILE is reached.
"""

from __future__ import annotations

import errno
import logging
import os

from cml_common.logbudget import LogBudget
from cmld.seccomp import notify
from cmld.seccomp.inotify_broker import InotifyBroker
from cmld.seccomp.notify import CallerGone, Notification, Response
from cmld.seccomp.procfs import NR_INOTIFY_INIT, NR_INOTIFY_INIT1

log = logging.getLogger(__name__)

IN_NONBLOCK = os.O_NONBLOCK
IN_CLOEXEC = os.O_CLOEXEC


def requested_flags(notif: Notification) -> int | None:
    """The inotify_init1 flags of the call (inotify_init: none), or None if the kernel would
    refuse them (EINVAL). Only the low 32 bits count: the argument is a C int."""
    if notif.nr == NR_INOTIFY_INIT:
        return 0
    if notif.nr != NR_INOTIFY_INIT1:
        return None
    flags = notif.args[0] & 0xFFFFFFFF
    return None if flags & ~(IN_NONBLOCK | IN_CLOEXEC) else flags


class InotifyEmulation:
    def __init__(self, listener_fd: int, container_name: str, broker: InotifyBroker,
                 budget: LogBudget | None = None) -> None:
        self._fd = listener_fd
        self._name = container_name
        self._broker = broker
        self._budget = budget or LogBudget(f"container {container_name}")

    def handle(self, notif: Notification) -> Response | None:
        """None: the caller already has its fd as the syscall's result. Raises CallerGone if the
        caller left meanwhile (then no instance stays anywhere)."""
        flags = requested_flags(notif)
        if flags is None:
            return notify.error(errno.EINVAL)
        notify.check_valid(self._fd, notif.id)  # make nothing for a caller that is gone
        try:
            instance = self._broker.create(bool(flags & IN_NONBLOCK))
        except OSError as e:
            err = e.errno or errno.EIO
            if err == errno.EMFILE:
                self._note("inotify instance for pid %d refused: the container's %d are in use", notif.pid,
                           self._broker.instances)
            else:
                self._note("inotify instance for pid %d: %s", notif.pid, e.strerror or e)
                err = errno.ENOMEM if err == errno.EIO else err
            return notify.error(err)
        try:
            notify.add_fd_and_answer(self._fd, notif.id, instance, cloexec=bool(flags & IN_CLOEXEC))
        except OSError as e:
            if e.errno == errno.ENOENT:
                raise CallerGone(f"notification {notif.id:#x} is no longer pending") from None
            return notify.error(e.errno or errno.EMFILE)  # the caller's own fd limit, as the kernel would
        finally:
            os.close(instance)  # the caller's copy, if installed, is the instance's only reference
        return None

    def _note(self, fmt: str, *args: object) -> None:
        if self._budget.allow("inotify"):
            log.info("container %s: " + fmt, self._name, *args)
