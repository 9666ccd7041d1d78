"""cmld: the container management daemon."""

from __future__ import annotations

import argparse
import asyncio
import grp
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path

from cml_common import daemon_runner, paths
from cml_common.daemon_args import common_parser

from .control.dispatcher import Dispatcher
from .control.server import ControlServer, ServerLimits
from .state import CmldState


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = common_parser("cmld", "Container management daemon (GyroidOS compatible).", paths.CONTROL_SOCKET)
    ap.add_argument("--device-conf", type=Path, help="device.conf to use (default BASE/device.conf)")
    ap.add_argument("--socket-group", help="group allowed to use the control socket (mode 0660)")
    ap.add_argument("--scd-socket", type=Path, default=paths.SCD_SOCKET, help="default %(default)s")
    ap.add_argument("--tpm2d-socket", type=Path, default=paths.TPM2D_SOCKET, help="default %(default)s")
    ap.add_argument("--hosted", action="store_true", default=None,
                    help="hosted mode (development host, no c0) regardless of device.conf")
    ap.add_argument("--idle-timeout", type=float, default=600.0,
                    help="disconnect a control client silent this many seconds (default %(default)s)")
    ap.add_argument("--frame-timeout", type=float, default=10.0,
                    help="disconnect a client that leaves a message unfinished this long (default %(default)s)")
    ap.add_argument("--max-clients", type=int, default=256, help="default %(default)s")
    return ap.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)

    async def start(stop: asyncio.Event) -> Callable[[], Awaitable[None]]:
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
        return server.close

    return daemon_runner.run(args, "cmld", "cml-daemon", start)


if __name__ == "__main__":
    sys.exit(main())
