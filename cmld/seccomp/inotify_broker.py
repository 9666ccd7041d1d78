"""cmld's end of a container's inotify broker (`cmld.launcher.inotify_broker`): starts it for a
container without a user namespace, asks it for instances, stops it with the container.

The broker is that container's own account for the kernel's per-user inotify counters: instances
it makes, and the watches later added to them, are charged to the container's reserved host UID
inside a user namespace whose limits are the container's budget (`budget`), never to host root.
Requests are served one at a time from cmld's event loop (each container's supervisors share one
broker); the round trip is a few tens of microseconds, bounded by `REPLY_TIMEOUT`.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import os
import socket
import subprocess
import sys

from cmld.launcher.inotify_broker import READY, REPLY, REQUEST
from cmld.runtime.reaper import REAPER

log = logging.getLogger(__name__)

START_TIMEOUT = 10.0  # s for the broker to report ready (a Python start on a loaded machine)
REPLY_TIMEOUT = 2.0  # s for one instance
STOP_TIMEOUT = 5.0  # s for the broker to leave after its socket closed, before SIGKILL


def budget(host_limits: dict[str, int]) -> tuple[int, int]:
    """(instances, watches) of a container: `userns_limits()`' share of the host's per-user
    limits, the same a user-namespaced container's users get."""
    return host_limits.get("max_inotify_instances", 16), host_limits.get("max_inotify_watches", 8192)


class InotifyBroker:
    """A running broker: `create` hands out instances charged to the container."""

    def __init__(self, sock: socket.socket, proc: subprocess.Popen[bytes], uid: int,
                 instances: int, watches: int) -> None:
        self._sock = sock
        self._proc = proc
        self._seq = 0
        self.uid = uid
        self.instances = instances
        self.watches = watches

    @property
    def pid(self) -> int:
        return self._proc.pid

    @classmethod
    async def start(cls, uid: int, instances: int, watches: int) -> InotifyBroker:
        """A broker for host UID `uid` with the given budget; OSError with the broker's own
        message if it cannot set itself up.

        Started with Popen and waited for through a pidfd, not with asyncio's subprocess: its
        child watcher keeps a thread per live child, one per running container here. The pid is
        claimed from cmld's orphan reaper until `close` has reaped it."""
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        try:
            proc = subprocess.Popen(
                [sys.executable, "-m", "cmld.launcher.inotify_broker", str(theirs.fileno()), str(uid),
                 str(instances), str(watches)], pass_fds=[theirs.fileno()], stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        except BaseException:
            ours.close()
            raise
        finally:
            theirs.close()
        REAPER.claim(proc.pid)
        ours.setblocking(False)
        try:
            first = await asyncio.wait_for(asyncio.get_running_loop().sock_recv(ours, 64), START_TIMEOUT)
        except (TimeoutError, OSError) as e:
            first = b""
            why = "no answer" if isinstance(e, TimeoutError) else str(e)
        else:
            why = "ended"
        if first != READY:
            ours.close()
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            try:
                _, err = await asyncio.to_thread(proc.communicate, timeout=STOP_TIMEOUT)
            finally:
                REAPER.release(proc.pid)
            message = err.decode(errors="replace").strip().splitlines()
            raise OSError(errno.EIO, f"inotify broker: {message[-1] if message else why}")
        assert proc.stderr is not None
        proc.stderr.close()  # it writes nothing once ready; a full pipe must never block it
        ours.settimeout(REPLY_TIMEOUT)
        return cls(ours, proc, uid, instances, watches)

    def create(self, nonblock: bool) -> int:
        """A new inotify instance (our fd, close-on-exec; the caller closes it). OSError with the
        kernel's errno (EMFILE: the container's budget is used up), or EIO if the broker is gone."""
        if self._sock.fileno() < 0:
            raise OSError(errno.EIO, "inotify broker stopped")
        self._seq = (self._seq + 1) & 0xFFFFFFFF
        try:
            self._sock.send(REQUEST.pack(self._seq, os.O_NONBLOCK if nonblock else 0))
            while True:
                msg, fds, _, _ = socket.recv_fds(self._sock, 64, 1)
                if not msg:
                    raise OSError(errno.EIO, "inotify broker ended")
                if len(msg) != REPLY.size:
                    for fd in fds:
                        os.close(fd)
                    raise OSError(errno.EIO, "inotify broker: malformed reply")
                seq, err = REPLY.unpack(msg)
                if seq != self._seq:  # the late answer to a request that timed out
                    for fd in fds:
                        os.close(fd)
                    continue
                if err or len(fds) != 1:
                    for fd in fds:
                        os.close(fd)
                    raise OSError(err or errno.EIO, os.strerror(err or errno.EIO))
                os.set_inheritable(fds[0], False)
                return fds[0]
        except TimeoutError:
            raise OSError(errno.EIO, "inotify broker: no answer") from None
        except ConnectionError:  # reset, broken pipe: the broker left
            raise OSError(errno.EIO, "inotify broker ended") from None

    @property
    def returncode(self) -> int | None:
        return self._proc.returncode

    async def close(self) -> None:
        """Stop the broker: it leaves when its socket closes; SIGKILL after STOP_TIMEOUT. Reaped
        here (its exit awaited through a pidfd in the event loop)."""
        self._sock.close()
        if self._proc.returncode is not None:
            return
        try:
            pidfd = os.pidfd_open(self._proc.pid)
        except OSError:  # already reaped by someone
            self._proc.poll()
            REAPER.release(self._proc.pid)
            return
        try:
            if not await _exited(pidfd, STOP_TIMEOUT):
                with contextlib.suppress(ProcessLookupError):
                    self._proc.kill()
                await _exited(pidfd, STOP_TIMEOUT)
            self._proc.poll()
        finally:
            os.close(pidfd)
            REAPER.release(self._proc.pid)


async def _exited(pidfd: int, timeout: float) -> bool:
    """Wait until the process of `pidfd` has exited (the pidfd polls readable); False on timeout."""
    loop = asyncio.get_running_loop()
    done: asyncio.Future[None] = loop.create_future()
    def readable() -> None:
        if not done.done():
            done.set_result(None)

    loop.add_reader(pidfd, readable)
    try:
        await asyncio.wait_for(done, timeout)
        return True
    except TimeoutError:
        return False
    finally:
        loop.remove_reader(pidfd)
