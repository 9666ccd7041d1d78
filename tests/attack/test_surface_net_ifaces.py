"""Attacks from a container that owns a NIC (`net_ifaces`): it keeps CAP_NET_ADMIN in its own
network namespace (`kept_caps(own_nics=True)`), so rtnetlink answers it. From inside, as its
root, in both user-namespace modes: move its NIC (or a link it made) into another namespace (by
PID, by the fd of a /proc/<pid>/ns/net it can open), make links of every kind whose driver the
kernel could load on demand (`rtnl-link-<kind>` module autoload), change network settings
(sysctls) that must stay its own, and forge uevents now that the kernel lets it send them.

The arena's cmld has no NIC to give, so these run on a cmld of their own (`--nic-kinds veth`),
with the NIC a veth whose other end stays in that cmld's namespace (the "wire"), and a second
container there as the neighbour partition.

Controls: the NIC arrives in the container and its CAP_NET_ADMIN works there (it sets its NIC's
MTU and makes a link of a built-in kind), so a refusal is the kernel's or cmld's verdict."""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from ..conftest import Daemon, cli
from ..host.containers import container_conf, uuid_of
from ..testnet import TestNetns
from .arena import MODES, Arena
from .conftest import Judge, modes
from .daemon import home_netns, wait_for_state
from .surfaces import put_surfatk, surf
from .test_surface_uevents import GENERIC_ID, forged

NIC = "atkn0"
# kinds whose drivers are usually modules (rtnl-link-<kind> aliases), and built-in ones
KINDS = ("vxlan", "geneve", "ipvlan", "macvlan", "macvtap", "bond", "team", "wireguard", "gtp", "batadv", "bareudp",
         "ipip", "gre", "sit", "vti", "ip6tnl", "nlmon", "vcan", "vxcan", "dummy", "ifb", "veth", "bridge", "vrf")
SYSCTLS = ("net/ipv4/ip_forward", "net/ipv4/conf/all/forwarding", "net/ipv6/conf/all/forwarding",
           "net/ipv4/conf/all/rp_filter", "net/core/somaxconn")


@dataclass
class NicRig:
    d: Daemon
    home: TestNetns
    run_dir: Path
    owners: dict[str, str]  # mode -> container with the NIC
    neighbour: str


def _links(ns: TestNetns | None) -> set[str]:
    cmd = ["ip", "-j", "link"]
    out = (ns.ip("-j", "link").stdout if ns else subprocess.run(cmd, capture_output=True, text=True,
                                                               check=True).stdout)
    return {str(x["ifname"]) for x in json.loads(out or "[]")}


def _modules() -> str | None:
    try:
        return Path("/proc/modules").read_text()
    except FileNotFoundError:
        return None


def _ns_sysctls(ns: TestNetns) -> dict[str, str]:
    r = ns.run("cat", *(f"/proc/sys/{s}" for s in SYSCTLS))
    return dict(zip(SYSCTLS, r.stdout.split(), strict=True))


@pytest.fixture(scope="module")
def rig(arena: Arena) -> Iterator[NicRig]:
    with arena.dedicated("nicd", "--stop-timeout", "3", "--nic-kinds", "veth") as d:
        run_dir = arena.tmp / "nicd-run"
        home = home_netns(run_dir)
        owners: dict[str, str] = {}
        for mode in MODES:
            tag = "u" if mode == "userns" else "n"
            nic = f"{NIC}{tag}"
            home.ip("link", "add", nic, "type", "veth", "peer", "name", f"{nic}w")
            conf = arena.tmp / f"nic-{tag}.conf"
            conf.write_text(container_conf(f"nic-{tag}", "attackos", userns=(mode == "userns"), ram_limit=48)
                            + f'net_ifaces {{ netif: "{nic}" }}\n')
            r = cli(d.socket, "create", str(conf))
            assert r.rc == 0, r.out + r.err
            owners[mode] = f"nic-{tag}"
        conf = arena.tmp / "nic-neighbour.conf"
        conf.write_text(container_conf("neighbour", "attackos", userns=True, ram_limit=48))
        assert cli(d.socket, "create", str(conf)).rc == 0
        for name in (*owners.values(), "neighbour"):
            r = cli(d.socket, "start", name, timeout=60)
            assert r.rc == 0, r.out + r.err
            wait_for_state(d, name, "RUNNING", timeout=30)
        for name in owners.values():
            put_surfatk(arena, name, d=d, run_dir=run_dir)
        yield NicRig(d, home, run_dir, owners, "neighbour")
        for name in (*owners.values(), "neighbour"):
            cli(d.socket, "stop", name, timeout=30)
        for mode in MODES:
            home.ip("link", "del", f"{NIC}{'u' if mode == 'userns' else 'n'}w", check=False)


def _neighbour_links(arena: Arena, rig: NicRig) -> set[str]:
    pid = arena.init_pid(uuid_of(rig.d, rig.neighbour), rig.run_dir)
    r = subprocess.run(["nsenter", f"--net=/proc/{pid}/ns/net", "ip", "-j", "link"], capture_output=True, text=True,
                       check=True)
    return {str(x["ifname"]) for x in json.loads(r.stdout or "[]")}


def _inside(arena: Arena, rig: NicRig, mode: str, *args: str) -> str:
    return surf(arena, rig.owners[mode], *args, d=rig.d)


def _control(arena: Arena, rig: NicRig, mode: str) -> str:
    """The NIC is in the container and its CAP_NET_ADMIN works there."""
    nic = f"{NIC}{'u' if mode == 'userns' else 'n'}"
    r = arena.exec(rig.owners[mode], "sh", "-c", f"ip link set {nic} mtu 1400 && ip link show {nic}", d=rig.d)
    assert r.rc == 0 and "mtu 1400" in r.out, f"control: CAP_NET_ADMIN on its own NIC: {r.out} {r.err}"
    return nic


@modes()
def test_execution_nic_moved_to_another_namespace(arena: Arena, rig: NicRig, mode: str, judge: Judge,
                                                  unaffected: Callable[[], None]) -> None:
    nic = _control(arena, rig, mode)
    cmld_pid, neighbour_pid = rig.d.proc.pid, arena.init_pid(uuid_of(rig.d, rig.neighbour), rig.run_dir)
    home_before, host_before, neigh_before = _links(rig.home), _links(None), _neighbour_links(arena, rig)
    tries = []
    for how, arg in (("pid", str(cmld_pid)), ("pid", str(neighbour_pid)), ("pid", "1"), ("pid", str(os.getpid())),
                     ("fd", "/proc/1/ns/net"), ("fd", f"/proc/{cmld_pid}/ns/net"), ("fd", "/run/netns/cmla"),
                     ("fd", "/proc/self/ns/net")):
        out = _inside(arena, rig, mode, "movelink", nic, how, arg).strip().splitlines()[-1]
        tries.append(f"{how} {arg}: {out}")
    moved = [(where, sorted(after - before)) for where, before, after in (
        ("cmld's namespace", home_before, _links(rig.home)), ("the host's", host_before, _links(None)),
        ("the neighbour's", neigh_before, _neighbour_links(arena, rig))) if after - before]
    if moved:
        judge.succeeded(f"{nic} reached {moved}: {tries}")
    r = arena.exec(rig.owners[mode], "ip", "link", "show", nic, d=rig.d)
    assert r.rc == 0, f"{nic} left the container, but for where? {tries} {r.out} {r.err}"
    judge.blocked(f"{'; '.join(tries)}; {nic} stays in the container (its MTU set: CAP_NET_ADMIN works)")
    unaffected()


@modes()
def test_execution_link_kinds_module_autoload(arena: Arena, rig: NicRig, mode: str, judge: Judge,
                                              unaffected: Callable[[], None]) -> None:
    """RTM_NEWLINK of every kind in KINDS: a kind whose driver is a module not yet loaded makes
    the kernel run modprobe (rtnl-link-<kind>) on the host's behalf. Modules the attack causes
    to load are the finding, and are unloaded again (only those)."""
    _control(arena, rig, mode)
    before = _modules()
    answers = {}
    for kind in KINDS:
        name = f"a{secrets.token_hex(3)}"
        out = _inside(arena, rig, mode, "newlink", kind, name).strip().splitlines()[-1]
        answers[kind] = out.split(" ", 2)[-1] if out.startswith("ack") else out
        if out.startswith("ack 0"):
            arena.exec(rig.owners[mode], "ip", "link", "del", name, d=rig.d)
    after = _modules()
    loaded = []
    if before is not None and after is not None:
        had = {ln.split()[0] for ln in before.splitlines()}
        loaded = [m for m in (ln.split()[0] for ln in after.splitlines()) if m not in had]
        for m in loaded:
            subprocess.run(["modprobe", "-r", m], capture_output=True, check=False)
    made = sorted(k for k, a in answers.items() if a == "ok")
    assert "dummy" in made or "veth" in made or "bridge" in made, f"control: no link of a built-in kind: {answers}"
    if loaded:
        judge.succeeded(f"modules loaded on the host by the container: {loaded} (unloaded again); answers {answers}")
    why = "this kernel has no loadable modules (/proc/modules absent)" if before is None else \
        "no module loaded"
    judge.blocked(f"{why}; made (in its own namespace): {made}; refused: "
                  f"{sorted({a for a in answers.values() if a != 'ok'})}")
    unaffected()


@modes()
def test_modification_network_settings_reach_other_namespaces(arena: Arena, rig: NicRig, mode: str, judge: Judge,
                                                              unaffected: Callable[[], None]) -> None:
    """Network sysctls written from inside (forwarding on, rp_filter off, somaxconn): they must
    stay the container's own; cmld's namespace (the router) and the host keep theirs."""
    _control(arena, rig, mode)
    home_before = _ns_sysctls(rig.home)
    script = "; ".join(f"echo {v} > /proc/sys/{s} 2>&1 && echo wrote {s} || echo refused {s}"
                       for s, v in zip(SYSCTLS, ("1", "1", "1", "0", "4242"), strict=True))
    r = arena.exec(rig.owners[mode], "sh", "-c", script, d=rig.d)
    wrote = [ln.split()[1] for ln in r.out.splitlines() if ln.startswith("wrote")]
    home_after = _ns_sysctls(rig.home)
    if home_after != home_before:
        judge.succeeded(f"cmld's namespace changed: {home_before} -> {home_after}")
    names = ", ".join(w.split("/")[-1] for w in wrote) or "/proc/sys is read-only inside"
    judge.blocked(f"wrote {len(wrote)} of {len(SYSCTLS)} in its own namespace ({names}); cmld's namespace and "
                  "the host's (unaffected) kept theirs")
    unaffected()


@modes()
def test_execution_uevent_forged_with_net_admin(arena: Arena, rig: NicRig, mode: str, judge: Judge,
                                                unaffected: Callable[[], None]) -> None:
    """With CAP_NET_ADMIN the kernel lets the container multicast on NETLINK_KOBJECT_UEVENT: a
    forged "add" of a block device and a "remove" of a USB device. They must stay in its own
    namespace: cmld hears nothing (its log), the neighbour's listener nothing."""
    ev = forged("add", "1-7", GENERIC_ID, 97)
    log_before = len(rig.d.log_text())
    heard: list[str] = []
    neighbour = rig.neighbour
    put_surfatk(arena, neighbour, d=rig.d, run_dir=rig.run_dir)
    own = threading.Thread(target=lambda: heard.append(_inside(arena, rig, mode, "uevent_listen", "3")))
    other = threading.Thread(target=lambda: heard.append(
        "neighbour:" + surf(arena, neighbour, "uevent_listen", "3", d=rig.d)))
    own.start()
    other.start()
    time.sleep(1.0)
    sent = _inside(arena, rig, mode, "uevent_send", ev.hex()).strip()
    own.join()
    other.join()
    log = rig.d.log_text()[log_before:]
    neighbour_heard = [h for h in heard if h.startswith("neighbour:") and "event add@" in h]
    if "1-7" in log or neighbour_heard:
        judge.succeeded(f"{sent}: cmld log {log[-200:]!r}, neighbour {neighbour_heard}")
    if sent.startswith("socket ") and mode == "no-userns":
        # No uevent socket at all without a user namespace (and without usb_configs): such a
        # socket would hear the whole device's uevents (test_surface_uevents).
        judge.blocked(f"uevent socket refused: {sent}; cmld and the neighbour heard nothing")
        unaffected()
        return
    own_heard = [h for h in heard if not h.startswith("neighbour:") and "event add@" in h]
    assert sent.startswith("sent") and own_heard, f"control: the forged uevent was not sent: {sent} {heard}"
    judge.blocked(f"{sent}, heard by its own listener only; cmld and the neighbour heard nothing")
    unaffected()
