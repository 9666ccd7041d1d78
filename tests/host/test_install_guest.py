"""feature_install_guest: a GuestOS with the flag gets cmld's control socket at
/run/socket/cml-control inside its containers, unprivileged: LIST_GUESTOS_CONFIGS,
PUSH_GUESTOS_CONFIG and REGISTER_LOCALCA are served; every other command (`list`, `start`...)
gets CMD_UNSUPPORTED, and a container without the flag has no socket at all."""

from __future__ import annotations

import json
import socket
import struct
from pathlib import Path

import pytest

from ..conftest import DaemonFactory, cli, is_root
from .containers import create, install_guestos, run, start, wait_state

pytestmark = [pytest.mark.host, pytest.mark.skipif(not is_root(), reason="needs root")]


def test_install_guest_container_gets_the_unprivileged_socket(cmld_factory: DaemonFactory,
                                                              guestos_src: Path) -> None:
    base = cmld_factory.tmp / "cmld-base"
    base.mkdir()
    install_guestos(guestos_src, base)
    install_guestos(guestos_src, base, name="installer", feature_install_guest=True)
    d = cmld_factory.start("--stop-timeout", "10", base=base)
    create(d, cmld_factory.tmp, "inst", guestos="installer")
    create(d, cmld_factory.tmp, "plain")
    for n in ("inst", "plain"):
        assert start(d, n).rc == 0
        wait_state(d, n, "RUNNING")
    run_dir = cmld_factory.tmp / "cmld-run"

    def init_of(name: str) -> int:
        uuid = next(line.split(":", 1)[1].strip().strip('"') for line in cli(d.socket, "state", name).out.splitlines()
                    if line.strip().startswith("uuid:"))
        return int(json.loads((run_dir / "records" / f"{uuid}.json").read_text())["init_pid"])

    try:
        # the socket is the container's own file (its root owns it), and only there
        ls = run(d, "inst", "nopty", "ls", "-ln", "/run/socket/").out
        assert "cml-control" in ls, ls
        assert "cml-control" not in run(d, "plain", "nopty", "ls", "/run/socket/").out
        inside = Path(f"/proc/{init_of('inst')}/root/run/socket/cml-control")

        # the original's subset: list_guestos works, everything else is CMD_UNSUPPORTED
        r = cli(inside, "list_guestos")
        assert r.rc == 0 and 'name: "installer"' in r.out and 'name: "busybox"' in r.out, r.out + r.err
        for args in (("list",), ("start", "plain"), ("stop", "plain"), ("remove", "plain"), ("get_provisioned",),
                     ("run", "plain", "nopty", "true"), ("wipe_device",)):
            r = cli(inside, *args)
            assert "CMD_UNSUPPORTED" in r.out + r.err, (args, r.out, r.err)
        # PUSH_GUESTOS_CONFIG is served (and fails on a bad signature, as on the host)
        bad = cmld_factory.tmp / "bad.conf"
        bad.write_text('name: "evil"\nversion: 9\n')
        r = cli(inside, "push_guestos_config", str(bad), str(bad), str(bad))
        assert "CMD_UNSUPPORTED" not in r.out + r.err, r.out + r.err
        assert "GUESTOS_MGR_INSTALL_FAILED" in r.out + r.err or r.rc != 0, r.out + r.err

        # hostile bytes on the unprivileged socket: a reply, and cmld keeps serving
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.settimeout(5)
        s.connect(str(inside))
        s.sendall(struct.pack(">I", 5) + b"\xff\xff\xff\xff\xff")
        assert len(s.recv(4)) == 4
        s.close()
        assert cli(inside, "list_guestos").rc == 0
        assert cli(d.socket, "list").rc == 0 and "plain" in cli(d.socket, "list").out
        assert "unprivileged (feature_install_guest) control socket" in d.log_text()
    finally:
        for n in ("inst", "plain"):
            cli(d.socket, "stop", n)
    wait_state(d, "inst", "STOPPED")
    assert not inside.exists()
