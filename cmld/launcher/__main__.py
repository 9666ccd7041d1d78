"""`python -m cmld.launcher FD`: builds one container and becomes (through a fork) its init.

Run by cmld with the sync socket as FD. It dies with cmld (PR_SET_PDEATHSIG) until it has
handed the container over, so a daemon crash mid-start leaves no half-built container running.

The namespaces are made so that the container's first process is born in its PID, network,
UTS and IPC namespaces while it is still root on the host in the launcher's mount namespace:
there it mounts /proc, /sys and the /proc masks, and only then enters the container's user
namespace and its own mount namespace, whose copy the kernel locks (`child.py`). The network,
UTS and IPC namespaces belong to the container's user namespace (`userns.py`); the PID namespace
is made here, by root of the host, and belongs to the host's user namespace: no process of the
container has the capability to mount a proc for it, so the one cmld mounted, masked and locked
is the only one there is.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import sys

from cmld import linux
from cmld.launcher import confine, userns
from cmld.launcher import early as early_mod
from cmld.launcher.channel import Channel
from cmld.launcher.spec import ERR_CGROUPS, ERR_GENERIC, ERR_USER, ERR_VOL, MSG_PID, MSG_SPEC, LaunchSpec


def _report(chan: Channel, code: int, message: str) -> None:
    with contextlib.suppress(OSError):
        chan.send({"type": "error", "code": code, "message": message})
    os._exit(1)


def owned_flags(spec: LaunchSpec) -> int:
    """The namespaces of the container's user namespace its first process is born into (PID
    too, which is the host's; mount and cgroup it makes itself once it has mounted /proc and
    /sys, and time right before init)."""
    flags = linux.CLONE_NEWUTS | linux.CLONE_NEWIPC
    return flags | (linux.CLONE_NEWNET if spec.netns else 0)


def main() -> None:
    parent = os.getppid()
    linux.prctl(linux.PR_SET_PDEATHSIG, signal.SIGKILL)
    if os.getppid() != parent:
        os._exit(1)
    chan = Channel(socket.socket(fileno=int(sys.argv[1])))
    msg = chan.expect(MSG_SPEC)
    spec = LaunchSpec.from_dict(msg["spec"])
    ns: userns.Namespaces | None = None
    try:
        # Inherited by everything below: the namespace helper (a user namespace records its
        # creator's limits) and every process of the container.
        confine.neutral_oom_score()
        confine.apply_rlimits(spec.rlimits)
        linux.unshare(linux.CLONE_NEWNS)
        linux.mount(None, "/", None, linux.MS_REC | linux.MS_PRIVATE)
        if spec.uid_start is not None:
            ns = userns.create(spec.uid_start, spec.uid_size, flags=owned_flags(spec), limits=spec.userns_limits)
    except (OSError, ValueError) as e:
        _report(chan, ERR_USER, f"namespaces: {e}")
    mounts = early_mod.EarlyMounts(spec, ns.user if ns is not None else None)
    try:
        mounts.run()
        os.chdir(spec.root_dir)
    except early_mod.MountError as e:
        _report(chan, ERR_VOL, str(e))
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
    try:
        if ns is not None:
            ns.join_owned()
            ns.close_owned()
            linux.unshare(linux.CLONE_NEWPID)
        else:
            linux.unshare(owned_flags(spec) | linux.CLONE_NEWPID)
    except OSError as e:
        _report(chan, ERR_GENERIC, f"namespaces: {e}")
    # The cwd (the container's root directory) is how the child finds its root again once it
    # is in its own mount namespace.
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
