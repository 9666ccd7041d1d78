"""The common life of a daemon: start serving, signal readiness, wait for a stop, clean up."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
from collections.abc import Awaitable, Callable

from . import sdnotify
from .daemonize import daemonize
from .logsetup import setup_logging

Starter = Callable[[asyncio.Event], Awaitable[Callable[[], Awaitable[None]]]]


async def serve(args: argparse.Namespace, program: str, start: Starter, ready_fd: int | None) -> int:
    """`start(stop_event)` brings the service up and returns its async close function."""
    log = logging.getLogger(program)
    stop = asyncio.Event()
    close = await start(stop)
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    if args.pid_file:
        args.pid_file.write_text(f"{os.getpid()}\n")
    log.info("%s ready (pid %d, socket %s)", program, os.getpid(), args.socket)
    sdnotify.ready(f"serving {args.socket}")
    if ready_fd is not None:
        os.write(ready_fd, b"ok")
        os.close(ready_fd)
    await stop.wait()
    log.info("%s stopping", program)
    sdnotify.stopping()
    await close()
    if args.pid_file:
        args.pid_file.unlink(missing_ok=True)
    return 0


def run(args: argparse.Namespace, program: str, file_prefix: str, start: Starter) -> int:
    foreground = args.foreground or bool(os.environ.get("NOTIFY_SOCKET"))
    ready_fd = None if foreground else daemonize()
    setup_logging(program, log_dir=args.log_dir, file_prefix=file_prefix, verbose=args.verbose)
    try:
        return asyncio.run(serve(args, program, start, ready_fd))
    except (RuntimeError, OSError, KeyError) as e:
        logging.getLogger(program).error("%s cannot start: %s", program, e)
        if ready_fd is not None:
            os.write(ready_fd, f"{program}: cannot start: {e}\n".encode())
        return 1
