"""`python -m cmld.launcher FD`: builds one container and becomes (through a fork) its init.

Run by cmld with the sync socket as FD. It dies with cmld (PR_SET_PDEATHSIG) until it has
handed the container over, so a daemon crash mid-start leaves no half-built container running.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import sys

from cmld import linux
from cmld.launcher import early as early_mod
from cmld.launcher import userns
from cmld.launcher.channel import Channel
from cmld.launcher.spec import (
    ERR_CGROUPS,
    ERR_GENERIC,
    ERR_USER,
    ERR_VOL,
    ERR_VOL_CORRUPTED,
    MSG_PID,
    MSG_SPEC,
    LaunchSpec,
)


def _report(chan: Channel, code: int, message: str) -> None:
    with contextlib.suppress(OSError):
        chan.send({"type": "error", "code": code, "message": message})
    os._exit(1)


def _preload_seccomp() -> None:
    """Import the seccomp binding without ctypes.util.find_library, which runs ldconfig in a
    subprocess for every library it looks up (milliseconds on every container start)."""
    import ctypes.util

    known = {"c": "libc.so.6", "seccomp": "libseccomp.so.2"}
    original = ctypes.util.find_library
    ctypes.util.find_library = lambda name: known.get(name) or original(name)
    try:
        import cmld.seccomp.filter  # noqa: F401
    finally:
        ctypes.util.find_library = original


def main() -> None:
    parent = os.getppid()
    linux.prctl(linux.PR_SET_PDEATHSIG, signal.SIGKILL)
    if os.getppid() != parent:
        os._exit(1)
    chan = Channel(socket.socket(fileno=int(sys.argv[1])))
    msg = chan.expect(MSG_SPEC)
    spec = LaunchSpec.from_dict(msg["spec"])
    if spec.seccomp:  # loaded now: after the pivot the host's libraries and Python path are out of reach
        _preload_seccomp()
    try:
        linux.unshare(linux.CLONE_NEWNS)
        linux.mount(None, "/", None, linux.MS_REC | linux.MS_PRIVATE)
        userns_fd = userns.create(spec.uid_start, spec.uid_size) if spec.uid_start is not None else None
    except OSError as e:
        _report(chan, ERR_USER, f"namespaces: {e}")
    mounts = early_mod.EarlyMounts(spec, userns_fd)
    try:
        mounts.run()
        os.chdir(spec.root_dir)
    except early_mod.MountError as e:
        _report(chan, ERR_VOL_CORRUPTED if e.corrupted else ERR_VOL, str(e))
    except OSError as e:
        _report(chan, ERR_VOL, f"mounting the container file systems: {e}")
    # Join the container's cgroups only now: the device policy there would deny the loop
    # devices the mounts above needed. Init is forked after this, so it starts accounted.
    try:
        for procs in spec.cgroup_procs:
            with open(procs, "w") as f:
                f.write(str(os.getpid()))
    except OSError as e:
        _report(chan, ERR_CGROUPS, f"joining cgroup: {e}")
    flags = linux.CLONE_NEWNS | linux.CLONE_NEWPID | linux.CLONE_NEWUTS | linux.CLONE_NEWIPC | linux.CLONE_NEWCGROUP
    if spec.netns:
        flags |= linux.CLONE_NEWNET
    try:
        if userns_fd is not None:
            linux.setns(userns_fd, linux.CLONE_NEWUSER)
            os.close(userns_fd)
        linux.unshare(flags)
    except OSError as e:
        _report(chan, ERR_GENERIC, f"namespaces: {e}")
    # The cwd follows into the new mount namespace: it is how the child finds its root there
    # (a path would need the host's 0700 run directory, which container root cannot traverse).
    pid = os.fork()
    if pid == 0:
        from cmld.launcher import child

        child.run(spec, mounts, chan)
        os._exit(1)
    chan.send({"type": MSG_PID, "pid": pid})
    os._exit(0)


if __name__ == "__main__":
    try:
        main()
    except Exception as e:
        print(f"cml launcher: {type(e).__name__}: {e}", file=sys.stderr)
        os._exit(ERR_GENERIC)
