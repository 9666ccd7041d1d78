"""finit_module(2) for a container with `allow_module` (the original's c_seccomp init_module.c):
cmld loads the module on the caller's behalf if module loading is on for the container (it needs
enforced module signatures), the caller holds CAP_SYS_MODULE and the file its fd names is an
allowed module under /lib/modules. cmld opens that path itself (the host's module tree, which the
container sees bound read-only), passes no parameters and only MODULE_INIT_COMPRESSED_FILE.
init_module(2) (a module image from the caller's memory) is always refused: the original lets it
through to the kernel."""

from __future__ import annotations

import ctypes
import errno
import logging
import os

from cmld.linux.libc import syscall
from cmld.seccomp import notify
from cmld.seccomp.caller import caller_of
from cmld.seccomp.module_policy import MODULE_INIT_COMPRESSED_FILE, ModuleAllowList
from cmld.seccomp.notify import Notification, Response
from cmld.seccomp.procfs import NR_FINIT_MODULE, NR_INIT_MODULE, int32

log = logging.getLogger(__name__)
CAP_SYS_MODULE = 16


class ModuleEmulation:
    def __init__(self, listener_fd: int, container_name: str, allow: ModuleAllowList | None, why_not: str) -> None:
        self._fd = listener_fd
        self._name = container_name
        self._allow = allow  # None: module loading is off for this container
        self._why_not = why_not

    def _deny(self, notif: Notification, why: str) -> Response:
        log.warning("container %s: %s by pid %d denied: %s", self._name,
                    "init_module" if notif.nr == NR_INIT_MODULE else "finit_module", notif.pid, why)
        return notify.error(errno.EPERM)

    def handle(self, notif: Notification) -> Response:
        if notif.nr == NR_INIT_MODULE:
            return self._deny(notif, "only finit_module of an allowed module file is emulated")
        if self._allow is None:
            return self._deny(notif, self._why_not)
        with caller_of(self._fd, notif) as caller:
            if not caller.status().has_cap(CAP_SYS_MODULE):
                return self._deny(notif, "the caller lacks CAP_SYS_MODULE")
            try:
                path = os.readlink(f"/proc/{notif.pid}/fd/{int32(notif.args[0])}")
            except OSError:
                return notify.error(errno.EBADF)
            notify.check_valid(self._fd, notif.id)
        why = self._allow.refusal(path)
        if why is not None:
            return self._deny(notif, why)
        flags = int32(notif.args[2]) & MODULE_INIT_COMPRESSED_FILE
        try:
            fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NOFOLLOW)
        except OSError as e:
            return self._deny(notif, f"cannot open {path}: {e.strerror}")
        try:
            rc = syscall(NR_FINIT_MODULE, ctypes.c_int(fd), ctypes.c_char_p(b""), ctypes.c_int(flags))
            err = ctypes.get_errno() if rc < 0 else 0
        finally:
            os.close(fd)
        if rc < 0:
            log.warning("container %s: finit_module %s: %s", self._name, path, os.strerror(err))
            return notify.error(err or errno.EPERM)
        log.info("container %s: module %s loaded for pid %d", self._name, path, notif.pid)
        return notify.success(rc)
