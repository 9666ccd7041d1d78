"""Backgrounding for the daemons when they are not run by systemd or with --foreground."""

from __future__ import annotations

import os
import sys


def daemonize() -> int:
    """Double fork; the original process exits only once the daemon is serving (or failed),
    so `cmld && cml-control list` is race-free. Returns the write end of the readiness pipe."""
    rfd, wfd = os.pipe()
    if os.fork() > 0:
        os.close(wfd)
        with os.fdopen(rfd, "rb") as r:
            msg = r.read()
        if msg == b"ok":
            os._exit(0)
        sys.stderr.write(msg.decode(errors="replace") or "daemon exited before it was ready\n")
        os._exit(1)
    os.close(rfd)
    os.setsid()
    if os.fork() > 0:
        os._exit(0)
    devnull = os.open(os.devnull, os.O_RDWR)
    for fd in (0, 1, 2):
        os.dup2(devnull, fd)
    os.close(devnull)
    return wfd
