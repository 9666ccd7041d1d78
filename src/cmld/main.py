"""cmld: the container management daemon."""

from __future__ import annotations

import argparse
import asyncio
import grp
import logging
import os
import signal
import sys
from pathlib import Path

from cml_common import paths, sdnotify
from cml_common.logsetup import setup_logging

from .control.dispatcher import Dispatcher
from .control.server import ControlServer, ServerLimits
from .state import CmldState

log = logging.getLogger("cmld")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(prog="cmld", description="Container management daemon (GyroidOS compatible).")
    ap.add_argument("--base-dir", type=Path, default=paths.DEFAULT_BASE_DIR,
                    help="data directory (default %(default)s; GyroidOS devices use /data/cml)")
    ap.add_argument("--device-conf", type=Path, help="device.conf to use (default BASE/device.conf)")
    ap.add_argument("--socket", type=Path, default=paths.CONTROL_SOCKET,
                    help="control socket path (default %(default)s)")
    ap.add_argument("--socket-group", help="group allowed to use the control socket (mode 0660)")
    ap.add_argument("--log-dir", type=Path, default=paths.DEFAULT_LOG_DIR, help="default %(default)s")
    ap.add_argument("--scd-socket", type=Path, default=paths.SCD_SOCKET, help="default %(default)s")
    ap.add_argument("--tpm2d-socket", type=Path, default=paths.TPM2D_SOCKET, help="default %(default)s")
    ap.add_argument("--hosted", action="store_true", default=None,
                    help="hosted mode (development host, no c0) regardless of device.conf")
    ap.add_argument("--foreground", "-F", action="store_true",
                    help="stay in the foreground (implied under systemd)")
    ap.add_argument("--pid-file", type=Path, help="write the daemon's PID here")
    ap.add_argument("--idle-timeout", type=float, default=600.0,
                    help="disconnect a control client silent for this many seconds (default %(default)s)")
    ap.add_argument("--frame-timeout", type=float, default=10.0,
                    help="disconnect a client that leaves a message unfinished this long (default %(default)s)")
    ap.add_argument("--max-clients", type=int, default=256, help="default %(default)s")
    ap.add_argument("--verbose", "-v", action="store_true")
    return ap.parse_args(argv)


async def serve(args: argparse.Namespace, ready_fd: int | None) -> int:
    state = CmldState(
        paths.Layout(args.base_dir), log_dir=args.log_dir, device_conf=args.device_conf,
        hosted_override=args.hosted, scd_socket=args.scd_socket, tpm2d_socket=args.tpm2d_socket,
    )
    state.load()
    gid = grp.getgrnam(args.socket_group).gr_gid if args.socket_group else None
    server = ControlServer(
        args.socket, Dispatcher(state),
        limits=ServerLimits(args.idle_timeout, args.frame_timeout, args.max_clients),
        mode=0o660 if gid is not None else 0o600, gid=gid,
    )
    await server.start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    if args.pid_file:
        args.pid_file.write_text(f"{os.getpid()}\n")
    mode = "hosted" if state.hosted else "device"
    log.info("cmld ready (%s mode, base %s, pid %d)", mode, args.base_dir, os.getpid())
    sdnotify.ready(f"serving {args.socket}")
    if ready_fd is not None:
        os.write(ready_fd, b"ok")
        os.close(ready_fd)
    await stop.wait()
    log.info("cmld stopping")
    sdnotify.stopping()
    await server.close()
    if args.pid_file:
        args.pid_file.unlink(missing_ok=True)
    return 0


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
        sys.stderr.write(msg.decode(errors="replace") or "cmld: daemon exited before it was ready\n")
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


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    foreground = args.foreground or bool(os.environ.get("NOTIFY_SOCKET"))
    ready_fd = None if foreground else daemonize()
    setup_logging("cmld", log_dir=args.log_dir, file_prefix="cml-daemon", verbose=args.verbose)
    try:
        return asyncio.run(serve(args, ready_fd))
    except (RuntimeError, OSError, KeyError) as e:
        log.error("cmld cannot start: %s", e)
        if ready_fd is not None:
            os.write(ready_fd, f"cmld: cannot start: {e}\n".encode())
        return 1


if __name__ == "__main__":
    sys.exit(main())
