"""One `cml-control run` session (the original's c_run): a helper joined to the container, its output streamed back.

Unlike the original (which drops output without a PTY and adds a NUL after every chunk), output
is relayed with and without a PTY, byte for byte, and the exit status ends the session.

The helper runs in a process group of its own, which its in-container half and a command without a
PTY inherit: killing a session (its client went away, `halt` timed out) kills that whole group,
not just the helper. A part that left the group is orphaned to cmld when the helper dies. cmld's
orphan reaper (`runtime/reaper.py`) kills and reaps it there.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import signal
import socket
import sys
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

from cml_common.aioframing import wait_readable

if TYPE_CHECKING:
    from cmld.modules.context import Closeable, StartContext

log = logging.getLogger(__name__)


async def _receive_fd(sock: socket.socket, proc: asyncio.subprocess.Process) -> int | None:
    """The listener fd from the helper, or None if it failed before installing the filter."""
    sock.setblocking(False)
    loop = asyncio.get_running_loop()
    readable = asyncio.ensure_future(wait_readable(loop, sock))
    waiter = asyncio.ensure_future(proc.wait())
    try:
        await asyncio.wait([readable, waiter], timeout=10, return_when=asyncio.FIRST_COMPLETED)
    finally:
        readable.cancel()
        waiter.cancel()
    try:
        _, fds, _, _ = socket.recv_fds(sock, 16, 1)
    except BlockingIOError:
        return None
    return fds[0] if fds else None
CHUNK = 4096
Output = Callable[[bytes], Awaitable[None]]


class ExecSession:
    def __init__(self, proc: asyncio.subprocess.Process, status_r: int) -> None:
        self.proc = proc
        self.status_r = status_r
        self.supervisor: Closeable | None = None

    @classmethod
    async def start(cls, *, init_pid: int, cgroup_procs: list[str], userns: bool, cap_drop: list[int],
                    argv: list[str], pty: bool, term: str = "", seccomp_bpf: str = "",
                    rlimits: dict[str, int] | None = None,
                    supervise: Callable[[int], Closeable] | None = None) -> ExecSession:
        """`supervise` receives the session's seccomp listener fd (the session runs under the
        container's filter, `seccomp_bpf`) and returns the running supervisor; None: no filter."""
        status_r, status_w = os.pipe2(os.O_CLOEXEC)
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
        filtered = supervise is not None and bool(seccomp_bpf)
        req = {"pid": init_pid, "cgroup_procs": cgroup_procs, "userns": userns, "cap_drop": cap_drop,
               "argv": argv, "pty": pty, "term": term, "status_fd": status_w, "rlimits": rlimits or {},
               "seccomp_bpf": seccomp_bpf if filtered else "",
               "seccomp_sock": theirs.fileno() if filtered else None}
        # The request goes through a memfd, not the command line: a container reads every
        # command line in its PID namespace, the helper's included.
        req_fd = os.memfd_create("cml-exec-request", os.MFD_CLOEXEC)
        try:
            data = json.dumps(req).encode()
            while data:
                data = data[os.write(req_fd, data):]
            os.lseek(req_fd, 0, os.SEEK_SET)
            proc = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "cmld.launcher.execute", str(req_fd),
                pass_fds=[status_w, theirs.fileno(), req_fd],
                stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
                env={"PATH": "/usr/sbin:/usr/bin:/sbin:/bin"}, start_new_session=True)
        except BaseException:
            os.close(status_r)
            ours.close()
            raise
        finally:
            os.close(req_fd)
            os.close(status_w)
            theirs.close()
        session = cls(proc, status_r)
        if filtered and supervise is not None:
            fd = await _receive_fd(ours, proc)
            if fd is not None:
                session.supervisor = supervise(fd)
        ours.close()
        return session

    @classmethod
    async def in_container(cls, ctx: StartContext, argv: list[str], pty: bool) -> ExecSession:
        """A session with the container's cgroup, namespaces, capabilities and seccomp filter."""
        return await cls.start(init_pid=ctx.init_pid, cgroup_procs=ctx.spec.cgroup_procs,
                               userns=ctx.spec.uid_start is not None, cap_drop=ctx.spec.cap_drop,
                               argv=argv, pty=pty, seccomp_bpf=ctx.spec.seccomp_bpf, rlimits=ctx.spec.rlimits,
                               supervise=ctx.seccomp.supervise_session if ctx.seccomp is not None else None)

    async def write_input(self, data: bytes) -> None:
        stdin = self.proc.stdin
        if stdin is None or stdin.is_closing():
            return
        if not data:  # an empty EXEC_INPUT closes the command's stdin (our extension)
            stdin.close()
            return
        try:
            stdin.write(data)
            await stdin.drain()
        except (ConnectionError, OSError):
            pass

    async def relay(self, output: Output) -> str:
        """Stream stdout and stderr to `output` until the command ends; returns the end reason."""
        async def pump(stream: asyncio.StreamReader | None) -> None:
            if stream is None:
                return
            while chunk := await stream.read(CHUNK):
                await output(chunk)

        await asyncio.gather(pump(self.proc.stdout), pump(self.proc.stderr))
        await self.proc.wait()
        loop = asyncio.get_running_loop()
        raw = await loop.run_in_executor(None, os.read, self.status_r, 4096)
        os.close(self.status_r)
        self.status_r = -1
        self.close_supervisor()
        return raw.decode(errors="replace") or "the exec helper ended without a status"

    def close_supervisor(self) -> None:
        if self.supervisor is not None:
            self.supervisor.close()
            self.supervisor = None

    def kill(self) -> None:
        """SIGKILL to the session's process group (the helper's pid is its id, pinned while the
        helper is not reaped, so this never reaches another group)."""
        self.close_supervisor()
        if self.proc.returncode is None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self.proc.pid, signal.SIGKILL)
