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
import signal
import socket
import subprocess
import sys

from cmld import linux
from cmld.launcher.inotify_broker import READY, REPLY, REQUEST

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

    def __init__(self, sock: socket.socket, proc: subprocess.Popen[bytes], pidfd: int, uid: int,
                 instances: int, watches: int) -> None:
        self._sock = sock
        self._proc = proc
        self._pidfd = pidfd
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

        Started with Popen and waited for, signalled and reaped through a pidfd opened at once,
        not with asyncio's subprocess: its child watcher keeps a thread per live child, one per
        running container here. The pidfd names this process and no other, so even if cmld's
        orphan reaper took a broker that died early (a zombie for its grace time), `close` can
        never signal a process that reused the PID."""
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
        pidfd = os.pidfd_open(proc.pid)  # before it can exit and be reaped: the PID is still ours
        ours.setblocking(False)
        try:
            first = await asyncio.wait_for(asyncio.get_running_loop().sock_recv(ours, 64), START_TIMEOUT)
        except (TimeoutError, OSError) as e:
            first = b""
            why = "no answer" if isinstance(e, TimeoutError) else str(e)
        except BaseException:  # the start was cancelled: leave nothing running (the reaper takes the zombie)
            ours.close()
            _kill(pidfd)
            os.close(pidfd)
            raise
        else:
            why = "ended"
        if first != READY:
            ours.close()
            try:
                _kill(pidfd)
                await _exited(pidfd, STOP_TIMEOUT)
                assert proc.stderr is not None
                err = proc.stderr.read()  # the pipe's writer is gone: EOF after what it wrote
                proc.stderr.close()
                proc.returncode = _reap(pidfd)
            finally:
                os.close(pidfd)
            message = err.decode(errors="replace").strip().splitlines()
            raise OSError(errno.EIO, f"inotify broker: {message[-1] if message else why}")
        assert proc.stderr is not None
        proc.stderr.close()  # it writes nothing once ready; a full pipe must never block it
        ours.settimeout(REPLY_TIMEOUT)
        return cls(ours, proc, pidfd, uid, instances, watches)

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
        here (its exit awaited through the pidfd in the event loop)."""
        self._sock.close()
        if self._pidfd < 0:
            return
        try:
            if not await _exited(self._pidfd, STOP_TIMEOUT):
                _kill(self._pidfd)
                await _exited(self._pidfd, STOP_TIMEOUT)
            self._proc.returncode = _reap(self._pidfd)
        finally:
            os.close(self._pidfd)
            self._pidfd = -1


def _kill(pidfd: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        linux.pidfd_send_signal(pidfd, signal.SIGKILL)


def _reap(pidfd: int) -> int:
    """The exit status of the exited process of `pidfd` as Popen gives it (-signal for a signal;
    -1 if someone else reaped it already, or it has not exited)."""
    try:
        res = os.waitid(os.P_PIDFD, pidfd, os.WEXITED | os.WNOHANG)
    except ChildProcessError:
        return -1
    if res is None:
        return -1
    return res.si_status if res.si_code == os.CLD_EXITED else -res.si_status


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
