"""One `cml-control run` session: a helper joined to the container, its output streamed back.

Unlike the original (which drops output without a PTY and adds a NUL after every chunk), output
is relayed with and without a PTY, byte for byte, and the exit status ends the session.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import sys
from collections.abc import Awaitable, Callable

log = logging.getLogger(__name__)
CHUNK = 4096
Output = Callable[[bytes], Awaitable[None]]


class ExecSession:
    def __init__(self, proc: asyncio.subprocess.Process, status_r: int) -> None:
        self.proc = proc
        self.status_r = status_r

    @classmethod
    async def start(cls, *, init_pid: int, cgroup_procs: list[str], userns: bool, cap_drop: list[int],
                    argv: list[str], pty: bool, term: str = "") -> ExecSession:
        status_r, status_w = os.pipe2(os.O_CLOEXEC)
        req = {"pid": init_pid, "cgroup_procs": cgroup_procs, "userns": userns, "cap_drop": cap_drop,
               "argv": argv, "pty": pty, "term": term, "status_fd": status_w}
        try:
            proc = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "cmld.launcher.execute", json.dumps(req), pass_fds=[status_w],
                stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
                env={"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "PYTHONDONTWRITEBYTECODE": "1"})
        except BaseException:
            os.close(status_r)
            raise
        finally:
            os.close(status_w)
        return cls(proc, status_r)

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
        return raw.decode(errors="replace") or "the exec helper ended without a status"

    def kill(self) -> None:
        if self.proc.returncode is None:
            try:
                self.proc.kill()
            except ProcessLookupError:
                pass
