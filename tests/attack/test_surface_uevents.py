"""Attacks on uevents (cmld's listener in modules/usb_hub.py, the per-container forwarding in
modules/usb.py). From inside a container, as its root:

* forge NETLINK_KOBJECT_UEVENT messages: the "add" of a USB device another container has in its
  `usb_configs` (cmld would make the node there and grant it), the add and "remove" of another
  container's token (cmld would stop that container);
* listen for uevents: the kernel's announcements of devices that are not the container's.

Controls: the attacker's own listener hears its forged messages (they were sent), cmld hears a
forged message sent in its own network namespace and says it ignores it (it listens, and a
message that reached it would show), and a listener of the host hears the kernel uevent the
disclosure attack waits for."""

from __future__ import annotations

import secrets
import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from cmld.modules.usb_hub import uevent_socket_in

from ..conftest import CliResult
from ..host.containers import container_conf
from ..testnet import TestNetns
from .arena import Arena
from .conftest import Judge, modes
from .daemon import home_netns, wait_for_state
from .surfaces import SURFATK, put_surfatk, surf

NETLINK_KOBJECT_UEVENT = 15
GENERIC_ID, TOKEN_ID = ("1d6b", "0104"), ("1050", "0407")
USB_VICTIM = "usbvictim"


def forged(action: str, port: str, ids: tuple[str, str], devnum: int) -> bytes:
    """A usb_device uevent as the kernel would send it."""
    devpath = f"/devices/pci0000:00/0000:00:14.0/usb1/{port}"
    env = [f"ACTION={action}", f"DEVPATH={devpath}", "SUBSYSTEM=usb", "MAJOR=189", f"MINOR={devnum - 1}",
           f"DEVNAME=bus/usb/001/{devnum:03d}", "DEVTYPE=usb_device",
           f"PRODUCT={int(ids[0], 16):x}/{int(ids[1], 16):x}/100", "BUSNUM=001", f"DEVNUM={devnum:03d}",
           "SEQNUM=999999"]
    return f"{action}@{devpath}\0".encode() + b"\0".join(e.encode() for e in env) + b"\0"


@pytest.fixture(scope="module")
def usb_victim(arena: Arena) -> Iterator[str]:
    """A container with a GENERIC device assigned and a TOKEN, by vendor:product with the empty
    serial a forged event without sysfs behind it has."""
    conf = arena.tmp / f"{USB_VICTIM}.conf"
    conf.write_text(container_conf(USB_VICTIM, "attackos", userns=True, ram_limit=48)
                    + f'usb_configs {{ id: "{":".join(GENERIC_ID)}" serial: "" assign: true type: GENERIC }}\n'
                    + f'usb_configs {{ id: "{":".join(TOKEN_ID)}" serial: "" assign: false type: TOKEN }}\n')
    r = arena.cli(arena.d, "create", str(conf))
    assert r.rc == 0, r.out + r.err
    try:
        assert arena.start_container(USB_VICTIM) == "RUNNING"
        yield USB_VICTIM
    finally:
        arena.cli(arena.d, "remove", USB_VICTIM)


def _in_background(arena: Arena, container: str, *args: str) -> tuple[threading.Thread, list[CliResult]]:
    out: list[CliResult] = []
    t = threading.Thread(target=lambda: out.append(arena.exec(container, SURFATK, *args)))
    t.start()
    return t, out


def _wait_listening() -> None:
    time.sleep(1.0)  # the listener binds within a few ms of its start; cml-control run takes longer


@modes()
def test_execution_uevent_forged_usb_events(arena: Arena, usb_victim: str, mode: str, judge: Judge,
                                            unaffected: Callable[[], None]) -> None:
    attacker = arena.attackers[mode]
    put_surfatk(arena, attacker)
    victim_pid = arena.init_pid(arena.uuid(usb_victim))
    events = [forged("add", "1-9", GENERIC_ID, 99), forged("add", "1-8", TOKEN_ID, 98),
              forged("remove", "1-8", TOKEN_ID, 98)]
    log_before = len(arena.d.log_text())
    listener, heard = _in_background(arena, attacker, "uevent_listen", "3")
    _wait_listening()
    sent = [surf(arena, attacker, "uevent_send", ev.hex()).strip() for ev in events]
    listener.join()
    time.sleep(0.5)
    log = arena.d.log_text()[log_before:]
    state = arena.init_pid_now(arena.uuid(usb_victim))
    node = Path(f"/proc/{victim_pid}/root/dev/bus/usb/001/099")
    if state != victim_pid or node.exists() or "plugged" in log or "was pulled" in log:
        judge.succeeded(f"sent {sent}: victim init {state} (was {victim_pid}), node {node.exists()}, log {log[-300:]}")
    own = [ln for ln in heard[0].out.splitlines() if ln.startswith("event ")] if heard else []
    # control 1: the forged messages were sent (where the kernel lets the container send them,
    # its own listeners hear them)
    if not all(s.startswith("sent") for s in sent):
        ctl1 = f"the send was refused: {sent}"
    else:
        assert len(own) >= len(events), f"sent {sent} but the attacker's own listener heard {own}"
        ctl1 = f"sent, and heard by the attacker's own listener ({len(own)} events)"
    judge.blocked(f"forged USB add (assigned device of {usb_victim}), token add+remove: {ctl1}; {usb_victim} "
                  "still runs, no node, cmld did nothing")
    # control 2: the same message in cmld's own namespace reaches cmld, which refuses it by sender
    s = uevent_socket_in(str(home_netns(arena.run_dir).path))
    try:
        s.sendto(events[0], (0, 1))
    finally:
        s.close()
    deadline = time.monotonic() + 5
    while "uevent from user space" not in arena.d.log_text()[log_before:] and time.monotonic() < deadline:
        time.sleep(0.1)
    assert "uevent from user space" in arena.d.log_text()[log_before:], "cmld did not hear the control uevent"
    judge.blocked("control: the same message sent in cmld's namespace is heard and ignored (port id not 0)")
    wait_for_state(arena.d, usb_victim, "RUNNING", timeout=5)
    unaffected()


def _loop_sysdir(arena: Arena) -> Path:
    assert arena.fs is not None and arena.fs.device
    return Path("/sys/block") / Path(arena.fs.device).name


@modes()
def test_disclosure_uevent_other_devices(arena: Arena, mode: str, judge: Judge,
                                         unaffected: Callable[[], None]) -> None:
    """The kernel announces a device that is not the container's (the arena's loop device: a
    synthetic "change" with a marker, as `udevadm trigger` makes); the attacker listens. Without
    a user namespace its network namespace belongs to the initial user namespace, where the
    kernel broadcasts every uevent: such a container (without usb_configs) gets no uevent socket."""
    attacker = arena.attackers[mode]
    put_surfatk(arena, attacker)
    marker = "atk" + secrets.token_hex(6)
    host = socket.socket(socket.AF_NETLINK, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC, NETLINK_KOBJECT_UEVENT)
    host.bind((0, 1))
    host.settimeout(5)
    listener, heard = _in_background(arena, attacker, "uevent_listen", "3")
    try:
        _wait_listening()
        (_loop_sysdir(arena) / "uevent").write_text(f"change {uuid.uuid4()} CMLATK={marker}")
        seen = b""
        deadline = time.monotonic() + 5
        while marker.encode() not in seen and time.monotonic() < deadline:
            seen += host.recv(16384)
    finally:
        host.close()
        listener.join()
    assert marker.encode() in seen, "control: the host's own listener did not hear the kernel uevent"
    got = heard[0].out if heard else ""
    assert "listening" in got or "listen " in got, got
    if marker in got:
        line = next(ln for ln in got.splitlines() if marker in ln)
        judge.succeeded(f"heard the kernel's uevent of the host's {arena.fs.device if arena.fs else '?'}: "
                        f"{line[:160]}")
    judge.blocked(f"{got.splitlines()[0]}; nothing of the kernel's uevent (the host's listener heard it)")
    unaffected()


def interface_event(action: str, port: str, ids: tuple[str, str]) -> bytes:
    devpath = f"/devices/pci0000:00/0000:00:14.0/usb1/{port}/{port}:1.0"
    env = [f"ACTION={action}", f"DEVPATH={devpath}", "SUBSYSTEM=usb", "DEVTYPE=usb_interface",
           f"PRODUCT={int(ids[0], 16):x}/{int(ids[1], 16):x}/100", "INTERFACE=8/6/80", "SEQNUM=999998"]
    return f"{action}@{devpath}\0".encode() + b"\0".join(e.encode() for e in env) + b"\0"


@modes()
def test_disclosure_uevent_forwarded_of_another_containers_usb(arena: Arena, mode: str, judge: Judge,
                                                               unaffected: Callable[[], None]) -> None:
    """cmld forwards the uevents of a USB device into the container it is assigned to. Another
    container listens: it must hear neither the device's events nor its interfaces' (the
    original forwards every usb_interface event to every container). This host has no USB: on a
    cmld of its own, the kernel is played from user space in a namespace cmld listens in
    (`--uevent-netns`, as tests/host/test_usb_hotplug.py)."""
    ns = TestNetns("cmlue")
    try:
        with arena.dedicated("ued", "--stop-timeout", "3", "--uevent-netns", str(ns.path)) as d:
            run_dir = arena.tmp / "ued-run"
            conf = arena.tmp / "usbowner.conf"
            conf.write_text(container_conf("usbowner", "attackos", userns=True, ram_limit=48)
                            + f'usb_configs {{ id: "{":".join(GENERIC_ID)}" serial: "" assign: true type: GENERIC }}\n')
            other = "usbother"
            conf2 = arena.tmp / "usbother.conf"
            conf2.write_text(container_conf(other, "attackos", userns=(mode == "userns"), ram_limit=48))
            for c in (conf, conf2):
                assert arena.cli(d, "create", str(c)).rc == 0
            for name in ("usbowner", other):
                assert arena.start_container(name, d) == "RUNNING"
                put_surfatk(arena, name, d=d, run_dir=run_dir)
            heard: dict[str, str] = {}

            def listen(name: str) -> None:
                heard[name] = surf(arena, name, "uevent_listen", "3", d=d)

            threads = [threading.Thread(target=listen, args=(n,)) for n in ("usbowner", other)]
            for t in threads:
                t.start()
            time.sleep(1.0)
            s = uevent_socket_in(str(ns.path))
            try:
                for ev in (forged("add", "1-5", GENERIC_ID, 95), interface_event("add", "1-5", GENERIC_ID),
                           interface_event("remove", "1-5", GENERIC_ID), forged("remove", "1-5", GENERIC_ID, 95)):
                    s.sendto(ev, (0, 1))
                    time.sleep(0.1)
            finally:
                s.close()
            for t in threads:
                t.join()
            owner_heard = [ln for ln in heard.get("usbowner", "").splitlines() if "/usb1/1-5" in ln]
            other_heard = [ln for ln in heard.get(other, "").splitlines() if "/usb1/1-5" in ln]
            assert any("usb_interface" in ln for ln in owner_heard) and any("usb_device" in ln for ln in owner_heard), \
                f"control: the owner did not hear its device's events: {heard.get('usbowner')}"
            if other_heard:
                judge.succeeded(f"another container heard {len(other_heard)} events of usbowner's device: "
                                f"{other_heard[0][:150]}")
            judge.blocked(f"usbowner heard its {len(owner_heard)} device and interface events; {other} none")
            for name in ("usbowner", other):
                arena.cli(d, "remove", name)
    finally:
        ns.close()
    unaffected()
