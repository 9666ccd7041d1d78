"""cmld's end of a container start: spawn the launcher, talk over the sync socket, watch init.

The launcher is exec'd (cmld never forks itself without exec: it has threads). It forks the
container's init and exits; init is re-parented to cmld, which is a child subreaper, and cmld
waits for it through a pidfd in the event loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import socket
import sys
from pathlib import Path
from typing import Any

from cml_common.aioframing import wait_readable
from cmld.errors import LaunchError
from cmld.launcher.channel import MAX_RECORD
from cmld.launcher.spec import LaunchSpec
from cmld.runtime.reaper import REAPER

log = logging.getLogger(__name__)
MAX_FDS = 4


class SyncChannel:
    def __init__(self, sock: socket.socket) -> None:
        sock.setblocking(False)
        self.sock = sock
        self.loop = asyncio.get_running_loop()

    async def send(self, msg: dict[str, Any]) -> None:
        await self.loop.sock_sendall(self.sock, json.dumps(msg).encode())

    async def recv(self) -> tuple[dict[str, Any] | None, list[int]]:
        """(message, fds); (None, []) when the peer closed its end (init was exec'd or died)."""
        while True:
            try:
                data, fds, _flags, _addr = socket.recv_fds(self.sock, MAX_RECORD, MAX_FDS)
            except BlockingIOError:
                await wait_readable(self.loop, self.sock)
                continue
            if not data:
                for fd in fds:
                    os.close(fd)
                return None, []
            try:
                msg = json.loads(data)
            except ValueError:
                for fd in fds:
                    os.close(fd)
                raise LaunchError("garbled message from the launcher") from None
            return msg, fds

    def close(self) -> None:
        self.sock.close()


class Launcher:
    """One launcher process and its sync channel."""

    def __init__(self, proc: asyncio.subprocess.Process, chan: SyncChannel, stderr_path: Path) -> None:
        self.proc = proc
        self.chan = chan
        self.stderr_path = stderr_path

    @classmethod
    async def spawn(cls, spec: LaunchSpec, stderr_path: Path) -> Launcher:
        """The launcher's stderr goes to a file, not a pipe: the container's first process
        inherits it until it switches to its own /dev/null, and on Python 3.11 a pipe would
        keep `Process.wait()` from returning until then. The launcher starts a session of its
        own, which the container inherits: no container process shares cmld's controlling
        terminal (TIOCSTI into the operator's shell) or its process group (a ^C to a cmld in
        the foreground)."""
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET | socket.SOCK_CLOEXEC)
        err = os.open(stderr_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
        try:
            proc = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "cmld.launcher", str(theirs.fileno()),
                pass_fds=[theirs.fileno()], stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.DEVNULL, stderr=err,
                env={"PATH": "/usr/sbin:/usr/bin:/sbin:/bin"}, start_new_session=True,
            )
        finally:
            theirs.close()
            os.close(err)
        launcher = cls(proc, SyncChannel(ours), stderr_path)
        await launcher.chan.send(json.loads(spec.to_json()))
        return launcher

    async def recv(self, expected: str) -> tuple[dict[str, Any], list[int]]:
        msg, fds = await self.chan.recv()
        if msg is None:
            raise LaunchError(await self._why_gone())
        if msg.get("type") == "error":
            for fd in fds:
                os.close(fd)
            raise LaunchError(str(msg.get("message", "unknown error")), int(msg.get("code", 1)))
        if msg.get("type") != expected:
            for fd in fds:
                os.close(fd)
            raise LaunchError(f"launcher sent {msg.get('type')!r}, expected {expected!r}")
        return msg, fds

    async def _why_gone(self) -> str:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.proc.wait(), 2)
        try:
            err = self.stderr_path.read_bytes()[-4096:]
        except OSError:
            err = b""
        text = err.decode(errors="replace").strip().splitlines()
        return text[-1] if text else "the launcher exited without a message"

    async def reap(self) -> None:
        try:
            await asyncio.wait_for(self.proc.wait(), 10)
        except TimeoutError:
            self.proc.kill()
            await self.proc.wait()

    def kill(self) -> None:
        if self.proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                self.proc.kill()


class InitWatcher:
    """Waits for the container's init through a pidfd; reaps it when it is our child (and
    claims it, so the orphan reaper leaves it alone)."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.pidfd = os.pidfd_open(pid)
        REAPER.claim(pid)
        self.loop = asyncio.get_running_loop()
        self.exited: asyncio.Future[tuple[str, int]] = self.loop.create_future()
        self.loop.add_reader(self.pidfd, self._readable)

    def _readable(self) -> None:
        try:
            res = os.waitid(os.P_PIDFD, self.pidfd, os.WEXITED | os.WNOHANG)
        except ChildProcessError:
            # Not (yet) our child: the launcher may still be exiting. Try again shortly.
            self.loop.remove_reader(self.pidfd)
            self.loop.call_later(0.01, self._retry)
            return
        if res is None:
            return
        self.loop.remove_reader(self.pidfd)
        how = "exit" if res.si_code == os.CLD_EXITED else "signal"
        if not self.exited.done():
            self.exited.set_result((how, res.si_status))

    def _retry(self) -> None:
        if self.exited.done():
            return
        try:
            res = os.waitid(os.P_PIDFD, self.pidfd, os.WEXITED | os.WNOHANG)
        except ChildProcessError:
            # Never ours (cmld is not a subreaper here): the pidfd said it exited.
            self.exited.set_result(("exit", -1))
            return
        if res is None:
            self.loop.add_reader(self.pidfd, self._readable)
            return
        how = "exit" if res.si_code == os.CLD_EXITED else "signal"
        self.exited.set_result((how, res.si_status))

    def signal(self, sig: int) -> None:
        from cmld import linux

        try:
            linux.pidfd_send_signal(self.pidfd, sig)
        except OSError as e:
            log.debug("signal %d to init %d: %s", sig, self.pid, e)

    def close(self) -> None:
        with contextlib.suppress(ValueError, OSError):
            self.loop.remove_reader(self.pidfd)
        os.close(self.pidfd)
        REAPER.release(self.pid)
