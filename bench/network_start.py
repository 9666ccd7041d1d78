#!/usr/bin/env python3
"""What a container's network costs at start: cmld with and without it, in the same run.

A real cmld (hosted mode, in a network namespace of the run's own, as container_start.py) starts
the demo busybox GuestOS as

* `netns: false`: no network namespace, no veth, no firewall change (the reference), and
* the default: own network namespace, the original's `host0` veth to the router with its
  addresses and default route, the partition firewall rebuilt (one nftables transaction);

each N times, alternating, START -> RUNNING measured over one control connection (polling every
2 ms). The added cost is the difference of the medians (the original's published figure for
netns + veth is about 0.1 s per container; the target here is at most 20 ms); on a busy machine
that difference drowns in the boot's own spread, so cmld's own time for the network set-up (its
log line "network set up in N ms") is reported as well. Then 20 containers
of each kind are started together (20 connections, one request each, at once) and the time until
the last is RUNNING is compared.

Usage: .venv/bin/python bench/network_start.py [--runs N] [--together N] [--json FILE]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from benchlib import REPO
from container_start import HOSTED_DEVICE_CONF, Cmld, Controller, Row, Sample, log, release_leftovers

from cml_common.messages.container_pb2 import ContainerState
from cml_common.messages.control_pb2 import ControllerToDaemon, DaemonToController
from cml_control.client import ControlClient

C, D, S = ControllerToDaemon, DaemonToController, ContainerState


def create(ctl: Controller, name: str, netns: bool) -> str:
    conf = f'name: "{name}"\nguest_os: "busybox"\ncolor: 0\ntype: CONTAINER\ntoken_type: NONE\n'
    if not netns:
        conf += "netns: false\n"
    reply = ctl.client.request(C(command=C.CREATE_CONTAINER, container_config_file=conf.encode()))
    if reply.code != D.CONTAINER_CONFIG:
        raise RuntimeError(f"CREATE_CONTAINER {name}: {reply}")
    return str(reply.container_uuids[0])


def together(sock: Path, ctl: Controller, uuids: list[str]) -> int:
    """All START requests at once (one connection each); ns until the last is RUNNING."""
    barrier = threading.Barrier(len(uuids) + 1)
    errors: list[str] = []

    def one(uuid: str) -> None:
        client = ControlClient(sock)
        try:
            barrier.wait()
            reply = client.request(C(command=C.CONTAINER_START, container_uuids=[uuid]))
            if reply.response != D.CONTAINER_START_OK:
                errors.append(f"{uuid}: {D.Response.Name(reply.response)} {reply.error_message}")
        finally:
            client.close()

    threads = [threading.Thread(target=one, args=(u,)) for u in uuids]
    for t in threads:
        t.start()
    barrier.wait()
    t0 = time.perf_counter_ns()
    for t in threads:
        t.join()
    if errors:
        raise RuntimeError("; ".join(errors))
    last = max(ctl.wait_state(u, S.RUNNING, (S.STOPPED, S.ZOMBIE)) for u in uuids)
    elapsed = last - t0
    for u in uuids:
        ctl.client.request(C(command=C.CONTAINER_STOP, container_uuids=[u]))
    for u in uuids:
        ctl.wait_state(u, S.STOPPED, (S.ZOMBIE,))
    return elapsed


def measure(tmp: Path, runs: int, n_together: int) -> dict[str, object]:
    os_dir = tmp / "guestos"
    subprocess.run([sys.executable, str(REPO / "scripts" / "build-guestos.py"), str(os_dir)], check=True,
                   capture_output=True, timeout=300)
    base = tmp / "base"
    (base / "operatingsystems").mkdir(parents=True)
    (base / "device.conf").write_text(HOSTED_DEVICE_CONF)
    shutil.copy2(os_dir / "busybox-1.conf", base / "operatingsystems" / "busybox-1.conf")
    shutil.copytree(os_dir / "busybox-1", base / "operatingsystems" / "busybox-1")
    cmld = Cmld(tmp)
    with contextlib.ExitStack() as stack:
        stack.callback(cmld.stop)
        cmld.start()
        ctl = Controller(cmld.sock)
        stack.callback(ctl.close)
        net, nonet = create(ctl, "net", True), create(ctl, "nonet", False)
        log("warm-up (first starts format the data images) ...")
        for u in (net, nonet):
            ctl.cycle(u)
        with_net, without = Sample(), Sample()
        for i in range(runs):
            log(f"round {i + 1}/{runs} ...")
            for u, s in ((net, with_net), (nonet, without)) if i % 2 == 0 else ((nonet, without), (net, with_net)):
                s.durations.append(ctl.cycle(u).start_running_ns)
        log(f"{n_together} containers of each kind started together ...")
        many_net = [create(ctl, f"net{i}", True) for i in range(n_together)]
        many_nonet = [create(ctl, f"nonet{i}", False) for i in range(n_together)]
        together(cmld.sock, ctl, many_net)  # warm-up: data images
        together(cmld.sock, ctl, many_nonet)
        t_net = together(cmld.sock, ctl, many_net)
        t_nonet = together(cmld.sock, ctl, many_nonet)
        if not cmld.alive():
            raise RuntimeError("cmld exited during the benchmark")
        setup = Sample([int(float(m.group(1)) * 1e6) for line in cmld.log_lines()
                        if (m := re.search(r"container net: network set up in ([0-9.]+) ms", line))][1:])
    row = Row.of("START -> RUNNING, own netns + host0 veth + firewall", with_net,
                 "START -> RUNNING, netns: false", without)
    return {"row": row, "added_ms": (with_net.median_ns - without.median_ns) / 1e6,
            "setup_median_ms": setup.median_ns / 1e6, "setup_p90_ms": setup.p90_ns / 1e6,
            "together": n_together, "together_net_ms": t_net / 1e6, "together_nonet_ms": t_nonet / 1e6}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="container start with and without networking")
    ap.add_argument("--runs", type=int, default=20, help="measured starts per kind (default %(default)s)")
    ap.add_argument("--together", type=int, default=20, help="containers started at once (default %(default)s)")
    ap.add_argument("--json", type=Path, metavar="FILE")
    args = ap.parse_args(argv)
    if os.geteuid() != 0:
        print("network_start.py needs root", file=sys.stderr)
        return 2
    tmp = Path(tempfile.mkdtemp(prefix="cml-bench-net-"))
    try:
        res = measure(tmp, args.runs, args.together)
    finally:
        release_leftovers(tmp)
        shutil.rmtree(tmp, ignore_errors=True)
    row: Row = res["row"]  # type: ignore[assignment]
    assert row.ref_median_ns is not None and row.ratio is not None
    print(f"{row.name}: median {row.median_ns / 1e6:.1f} ms (p90 {row.p90_ns / 1e6:.1f}), n={row.n}")
    print(f"{row.reference}: median {row.ref_median_ns / 1e6:.1f} ms, ratio {row.ratio:.2f}")
    print(f"added by networking: {res['added_ms']:.1f} ms per container (difference of the medians; "
          f"original: ~100 ms; target <= 20 ms)")
    print(f"cmld's network set-up of the container (its log): median {res['setup_median_ms']:.1f} ms, "
          f"p90 {res['setup_p90_ms']:.1f} ms")
    print(f"{res['together']} started together: {res['together_net_ms']:.0f} ms with networking, "
          f"{res['together_nonet_ms']:.0f} ms without (ratio "
          f"{float(res['together_net_ms']) / float(res['together_nonet_ms']):.2f})")  # type: ignore[arg-type]
    if args.json:
        out = dict(res, row=row.__dict__)
        args.json.write_text(json.dumps(out, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
