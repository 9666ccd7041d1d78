"""The first format of an integrity volume: every sector written once through the whole stack, so
every sector has a tag (the original's cryptfs_write_zeros; `integritysetup format` wipes the same
way). Reading a sector that was never written fails with EIO, which is why nothing may mount a
volume whose fill did not finish.

The writing runs in its own process (`python -m cmld.crypt.fill DEVICE`), which dies with cmld
(PR_SET_PDEATHSIG) and prints `progress <done> <total>` lines; cmld reads them in a thread and logs
the percentage, so its event loop and control socket stay free meanwhile."""

from __future__ import annotations

import mmap
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable

from cmld.crypt.tools import ToolError

CHUNK = 4 << 20
REPORT_EVERY = 1.0  # s


def parse_progress(line: str) -> tuple[int, int] | None:
    """(done, total) bytes from a `progress` line; None for anything else."""
    parts = line.split()
    if len(parts) != 3 or parts[0] != "progress" or not (parts[1].isdigit() and parts[2].isdigit()):
        return None
    done, total = int(parts[1]), int(parts[2])
    return (done, total) if total > 0 and 0 <= done <= total else None


def zero_fill(device: str, on_progress: Callable[[int, int], None], timeout: float | None = None) -> None:
    """Blocking: fill `device` with zeroes in a child process; `on_progress(done, total)`."""
    argv = [sys.executable, "-m", "cmld.crypt.fill", device]
    with subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) as p:
        assert p.stdout is not None and p.stderr is not None
        finished = False
        deadline = None if timeout is None else time.monotonic() + timeout
        for line in p.stdout:
            if line.strip() == "done":
                finished = True
            elif (pr := parse_progress(line)) is not None:
                on_progress(*pr)
            if deadline is not None and time.monotonic() > deadline:
                p.kill()
                raise ToolError(f"formatting {device}: no end after {timeout:.0f} s")
        err = p.stderr.read().strip()
        rc = p.wait()
    if rc != 0 or not finished:
        raise ToolError(f"formatting {device} failed: {err or f'exit status {rc}'}")


def _fill(device: str) -> None:
    fd = os.open(device, os.O_WRONLY | os.O_DIRECT | os.O_CLOEXEC)
    buf = mmap.mmap(-1, CHUNK)  # page aligned and zeroed, as O_DIRECT needs
    try:
        total = os.lseek(fd, 0, os.SEEK_END)
        done, last = 0, 0.0
        print(f"progress 0 {total}", flush=True)
        while done < total:
            n = os.pwrite(fd, memoryview(buf)[: min(CHUNK, total - done)], done)
            if n <= 0:
                raise OSError(f"short write at byte {done}")
            done += n
            if time.monotonic() - last >= REPORT_EVERY or done == total:
                last = time.monotonic()
                print(f"progress {done} {total}", flush=True)
        os.fsync(fd)
    finally:
        buf.close()
        os.close(fd)
    print("done", flush=True)


def main() -> int:
    from cmld import linux

    linux.prctl(linux.PR_SET_PDEATHSIG, signal.SIGKILL)
    if len(sys.argv) != 2:
        print("usage: python -m cmld.crypt.fill DEVICE", file=sys.stderr)
        return 2
    try:
        _fill(sys.argv[1])
    except OSError as e:
        print(f"{sys.argv[1]}: {e.strerror or e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
