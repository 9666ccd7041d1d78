"""File-level helpers shared by the v1 and v2 drivers: cgroup files, trees, and where the host
mounts its hierarchies."""

from __future__ import annotations

import errno
import os
import re
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

CGROUP_ROOT = Path("/sys/fs/cgroup")


def write_file(path: Path, value: str) -> None:
    """Write a control file; the error names the file and value (kernel errnos alone say little)."""
    try:
        # One write(2) per value (cgroup files treat each write as a command), no O_CREAT
        # (a missing control file should say ENOENT, not EACCES).
        fd = os.open(path, os.O_WRONLY | os.O_CLOEXEC)
        try:
            os.write(fd, value.encode())
        finally:
            os.close(fd)
    except OSError as e:
        raise OSError(e.errno, f"writing {value!r} to {path}: {os.strerror(e.errno or 0)}") from None


def read_file(path: Path) -> str:
    try:
        return path.read_text().strip()
    except OSError as e:
        raise OSError(e.errno, f"reading {path}: {os.strerror(e.errno or 0)}") from None


def read_keyed(path: Path) -> dict[str, int]:
    """Parse `key value` lines (memory.events, cgroup.events, memory.oom_control)."""
    out: dict[str, int] = {}
    for line in read_file(path).splitlines():
        key, _, value = line.partition(" ")
        if value.strip().lstrip("-").isdigit():
            out[key] = int(value)
    return out


def walk_bottom_up(top: Path) -> Iterator[Path]:
    """Subdirectories of `top` (children before parents), then `top`; vanished dirs are skipped."""
    try:
        entries = list(os.scandir(top))
    except FileNotFoundError:
        return
    for entry in entries:
        if entry.is_dir(follow_symlinks=False):
            yield from walk_bottom_up(Path(entry.path))
    yield top


def subtree_pids(top: Path) -> set[int]:
    pids: set[int] = set()
    for d in walk_bottom_up(top):
        try:
            text = (d / "cgroup.procs").read_text()
        except (FileNotFoundError, NotADirectoryError):
            continue
        pids.update(int(p) for p in text.split())
    return pids


def rmdir_tree(top: Path, timeout: float = 2.0) -> None:
    """Remove `top` and its children; EBUSY (tasks still exiting) is retried until `timeout`."""
    deadline = time.monotonic() + timeout
    for d in walk_bottom_up(top):
        while True:
            try:
                os.rmdir(d)
                break
            except FileNotFoundError:
                break
            except OSError as e:
                if e.errno != errno.EBUSY or time.monotonic() > deadline:
                    raise OSError(e.errno, f"rmdir {d}: {os.strerror(e.errno or 0)}") from None
                time.sleep(0.01)


def wait_until(pred: Callable[[], bool], timeout: float, what: str) -> None:
    """Poll `pred()` every 5 ms; RuntimeError naming `what` after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while not pred():
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out after {timeout:g} s waiting for {what}")
        time.sleep(0.005)


def unescape_mount_field(field: str) -> str:
    """mountinfo escapes space, tab, newline and backslash as \\ooo."""
    return re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), field)


@dataclass
class CgroupMount:
    mountpoint: Path
    root: str
    fstype: str
    options: set[str]


def cgroup_mounts(mountinfo: str | None = None) -> list[CgroupMount]:
    """cgroup and cgroup2 mounts of this mount namespace, from /proc/self/mountinfo."""
    if mountinfo is None:
        with open("/proc/self/mountinfo") as f:
            mountinfo = f.read()
    mounts = []
    for line in mountinfo.splitlines():
        pre, sep, post = line.partition(" - ")
        if not sep:
            continue
        fields = pre.split()
        tail = post.split()
        if len(fields) < 5 or len(tail) < 3 or tail[0] not in ("cgroup", "cgroup2"):
            continue
        mounts.append(CgroupMount(Path(unescape_mount_field(fields[4])), unescape_mount_field(fields[3]),
                                  tail[0], set(tail[2].split(","))))
    return mounts


def own_cgroups(text: str | None = None) -> dict[str, str]:
    """/proc/self/cgroup as {controllers: path}; v2 is the key "" (e.g. {"cpu,cpuacct": "/x", "": "/"})."""
    if text is None:
        with open("/proc/self/cgroup") as f:
            text = f.read()
    out = {}
    for line in text.splitlines():
        parts = line.split(":", 2)
        if len(parts) == 3:
            out[parts[1]] = parts[2]
    return out


def join_cgroup_path(mount: CgroupMount, path: str) -> Path:
    """The directory of cgroup `path` (as in /proc/self/cgroup) under `mount`."""
    root = mount.root.rstrip("/")
    if root and (path == root or path.startswith(root + "/")):
        path = path[len(root):]
    return mount.mountpoint / path.lstrip("/")
