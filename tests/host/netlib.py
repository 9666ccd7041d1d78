"""Helpers of the network tests: a test-owned world around cmld's namespace, configs with
network fields, and looking at links, routes and cmld's firewall from outside."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from ..conftest import CliResult, Daemon, cli
from ..testnet import TestNetns
from .containers import run

WORLD_ADDR = "198.51.100.2"  # a server "outside" (TEST-NET-2, only ever inside test namespaces)
HOME_ADDR = "198.51.100.1"
MARK = "hello-from-outside"


def conf(name: str, body: str = "", guestos: str = "busybox") -> str:
    return (f'name: "{name}"\nguest_os: "{guestos}"\ncolor: 0\ntype: CONTAINER\ntoken_type: NONE\n{body}')


def vnet(if_name: str, configure: bool = True, rootns: str = "", mac: str = "") -> str:
    s = f'vnet_configs {{ if_name: "{if_name}" configure: {"true" if configure else "false"}'
    s += f' if_rootns_name: "{rootns}"' if rootns else ""
    s += f' if_mac: "{mac}"' if mac else ""
    return s + " }\n"


def create(d: Daemon, tmp: Path, name: str, body: str = "") -> None:
    p = tmp / f"{name}.conf"
    p.write_text(conf(name, body))
    r = cli(d.socket, "create", str(p))
    assert r.rc == 0, r.out + r.err


def sh(d: Daemon, name: str, script: str, timeout: float = 30) -> CliResult:
    return run(d, name, "nopty", "sh", "-c", script, timeout=timeout)


def fetch(d: Daemon, name: str, host: str, port: int = 8080, timeout: int = 5) -> CliResult:
    """GET /mark from inside a container (busybox nc: the static busybox wget crashes in its
    libc's service lookup)."""
    return sh(d, name, f"printf 'GET /mark HTTP/1.0\\r\\n\\r\\n' | nc -w {timeout} {host} {port}", timeout=timeout + 20)


def http_server(world: TestNetns, root: Path, addr: str = WORLD_ADDR, port: int = 8080) -> subprocess.Popen[str]:
    """A static HTTP server in `world` serving `root` (a file `mark` with MARK in it)."""
    root.mkdir(parents=True, exist_ok=True)
    (root / "mark").write_text(MARK + "\n")
    p = world.popen(sys.executable, "-m", "http.server", "--bind", addr, "--directory", str(root), str(port))
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        if f":{port}" in world.run("ss", "-ltn", check=False).stdout:
            return p
        time.sleep(0.05)
    p.kill()
    raise RuntimeError("test http server did not come up")


def links(ns: str) -> dict[str, dict[str, Any]]:
    """`ip -j -d link` of a namespace (its name under /run/netns), by interface name."""
    cmd = ["ip", "-j", "-d", "-n", ns, "link"]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
    return {lk["ifname"]: lk for lk in json.loads(out)}


def addrs(ns: str) -> dict[str, list[str]]:
    cmd = ["ip", "-j", "-n", ns, "-4", "addr"]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
    return {a["ifname"]: [f"{i['local']}/{i['prefixlen']}" for i in a.get("addr_info", [])] for a in json.loads(out)}


def default_route(ns: str) -> str:
    cmd = ["ip", "-j", "-n", ns, "route", "show", "default"]
    out = json.loads(subprocess.run(cmd, capture_output=True, text=True, check=True).stdout)
    return str(out[0].get("gateway", "")) if out else ""


def ruleset(ns_path: Path | str) -> list[dict[str, Any]]:
    """nftables ruleset of a namespace (JSON items), read through libnftables on a thread there."""
    from cmld.linux import nftables
    from cmld.net.netns import Netns

    ns = Netns.open(ns_path, "test")
    try:
        return ns.run(nftables.ruleset_json)
    finally:
        ns.close()


def cmld_tables(ns_path: Path | str) -> list[str]:
    return [f"{i['table']['family']} {i['table']['name']}" for i in ruleset(ns_path)
            if "table" in i and i["table"]["name"] == "cmld"]


def drops(ns_path: Path | str, chain: str) -> int:
    """Packets counted by the counted drop rules of one of cmld's chains."""
    total = 0
    for item in ruleset(ns_path):
        rule = item.get("rule")
        if rule and rule["table"] == "cmld" and rule["chain"] == chain:
            for e in rule["expr"]:
                if "counter" in e:
                    total += int(e["counter"]["packets"])
    return total


def netns_of(d: Daemon, uuid: str) -> str:
    return str(Path("/run/netns") / uuid)
