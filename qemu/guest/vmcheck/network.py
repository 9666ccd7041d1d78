"""A physical NIC for a container (issue 15): the guest's second virtio NIC, on a QEMU user
network that reaches exactly one server the host test runs on its loopback (guestfwd), is named
by MAC in the container's `net_ifaces`. Collected: the NIC leaving cmld's namespace, the
container's interfaces (`cml-control ifaces`), the container fetching from the host server
through that NIC, its veth `host0` reaching its gateway, and the NIC back after the stop."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from .common import CheckFailed, must, sh
from .container import field

NAME = "vmnet"
MAC = "52:54:00:c1:00:02"  # tests/vm/conftest.py gives the second NIC this MAC
SERVER, PORT, ADDR = "10.0.3.100", 8080, "10.0.3.15/24"
CONF = (f'name: "{NAME}"\nguest_os: "busybox"\ncolor: 0\ntype: CONTAINER\ntoken_type: NONE\n'
        f'net_ifaces {{ netif: "{MAC}" }}\n')


def nic_by_mac() -> str:
    for p in Path("/sys/class/net").iterdir():
        if (p / "address").read_text().strip() == MAC:
            return p.name
    return ""


def wait(want: str, seconds: int = 120) -> str:
    import time

    last = ""
    for _ in range(seconds):
        last = field(sh("cml-control", "state", NAME, timeout=60).out, "state")
        if last == want:
            break
        time.sleep(1)
    return last


def run(script: str, timeout: float = 60) -> dict[str, Any]:
    r = sh("cml-control", "run", NAME, "nopty", "sh", "-c", script, timeout=timeout)
    return {"rc": r.rc, "out": r.text[-2000:]}


def check() -> dict[str, Any]:
    data: dict[str, Any] = {"nic_before": nic_by_mac()}
    if not data["nic_before"]:
        raise CheckFailed(f"no NIC with MAC {MAC} in the guest", data)
    conf = Path("/run/vmnet.conf")
    conf.write_text(CONF)
    try:
        must("cml-control", "create", str(conf), timeout=60)
        data["start"] = sh("cml-control", "start", NAME, timeout=120).text[-500:]
        data["state"] = wait("RUNNING")
        data["nic_in_cmld_ns_while_running"] = nic_by_mac()
        ifaces = sh("cml-control", "ifaces", NAME, timeout=60).out
        data["ifaces"] = ifaces
        inside = re.search(rf'\d+: ([^:@]+)[^"]*?link/ether {MAC}', ifaces.replace("\\n", " "))
        data["nic_inside"] = inside.group(1) if inside else ""
        if not data["nic_inside"]:
            raise CheckFailed("the NIC is not among the container's interfaces", data)
        nic = data["nic_inside"]
        # A container with NICs of its own (net_ifaces) keeps NET_ADMIN in its namespace and
        # configures them itself, as a GuestOS's network setup would.
        data["configure"] = run(f"ip addr add {ADDR} dev {nic} && ip link set {nic} up")
        # (an exec session alone takes tens of seconds under TCG on a loaded host)
        data["fetch"] = run(f"printf 'GET /mark HTTP/1.0\\r\\n\\r\\n' | nc -w 10 {SERVER} {PORT}", timeout=180)
        host0 = run("ip -4 -o addr show host0")
        m = re.search(r"inet (172\.23\.\d+)\.2/24", host0["out"])
        data["gateway_ping"] = run(f"ping -c1 -W3 {m.group(1)}.1") if m else {"rc": -1, "out": host0["out"]}
        data["stop"] = sh("cml-control", "stop", NAME, timeout=120).text[-300:]
        data["state_after_stop"] = wait("STOPPED", 90)
        data["nic_after"] = nic_by_mac()
        return data
    except CheckFailed as e:
        e.data.update(data)
        raise
    finally:
        full = sh("journalctl", "-b", "-u", "cmld", "-o", "cat", "-n", "2000").text
        data["cmld_log"] = [ln for ln in full.splitlines() if "network" in ln or f"container {NAME}" in ln][-30:]
        conf.unlink(missing_ok=True)
