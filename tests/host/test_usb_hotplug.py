"""USB devices by usb_configs and uevent forwarding, with the real cmld: this host has no USB, so
the devices are a sysfs-shaped tree (`--sysfs`) and the kernel's uevents are played from user
space in a test network namespace cmld listens in (`--uevent-netns`). Checked from inside the
containers: the node appears and is usable as far as the device cgroup goes (ENXIO from the
missing driver, not EPERM), another container has neither node nor access, the uevent reaches the
container's own network namespace, and a pulled token stops its container."""

from __future__ import annotations

import os
import socket
import subprocess
import uuid as uuidlib
from collections.abc import Iterator
from pathlib import Path

import pytest

from cmld.modules.usb_hub import KERNEL_GROUP, uevent_socket_in
from tests.conftest import Daemon, DaemonFactory, cli, is_root
from tests.host.containers import install_guestos, run, start, state, uuid_of, wait_state

pytestmark = [pytest.mark.host, pytest.mark.skipif(not is_root(), reason="needs root")]
USB_MAJOR = 189


@pytest.fixture
def uevent_netns() -> Iterator[str]:
    name = f"cmlue-{uuidlib.uuid4().hex[:8]}"
    subprocess.run(["ip", "netns", "add", name], check=True)
    try:
        yield f"/run/netns/{name}"
    finally:
        subprocess.run(["ip", "netns", "del", name], check=False)


def add_device(sysfs: Path, port: str, vid: str, pid: str, serial: str, devnum: int) -> str:
    """A USB device as sysfs shows it; returns its DEVPATH."""
    devpath = f"/devices/pci0000:00/0000:00:14.0/usb1/{port}"
    d = sysfs / devpath.lstrip("/")
    d.mkdir(parents=True)
    minor = devnum - 1
    for name, value in (("idVendor", vid), ("idProduct", pid), ("serial", serial), ("dev", f"{USB_MAJOR}:{minor}"),
                        ("busnum", "1"), ("devnum", str(devnum)),
                        ("uevent", f"MAJOR={USB_MAJOR}\nMINOR={minor}\nDEVNAME=bus/usb/001/{devnum:03d}\n"
                                   "DEVTYPE=usb_device\n")):
        (d / name).write_text(value + "\n")
    links = sysfs / "bus" / "usb" / "devices"
    links.mkdir(parents=True, exist_ok=True)
    (links / port).symlink_to(d)
    return devpath


def uevent(action: str, devpath: str, vid: str, pid: str, devnum: int, seq: int) -> bytes:
    env = [f"ACTION={action}", f"DEVPATH={devpath}", "SUBSYSTEM=usb", f"MAJOR={USB_MAJOR}", f"MINOR={devnum - 1}",
           f"DEVNAME=bus/usb/001/{devnum:03d}", "DEVTYPE=usb_device",
           f"PRODUCT={int(vid, 16):x}/{int(pid, 16):x}/100", "BUSNUM=001", f"DEVNUM={devnum:03d}", f"SEQNUM={seq}"]
    return f"{action}@{devpath}\0".encode() + b"\0".join(e.encode() for e in env) + b"\0"


def conf(name: str, *usb: str) -> str:
    return (f'name: "{name}"\nguest_os: "busybox"\ncolor: 0\ntype: CONTAINER\ntoken_type: NONE\n'
            + "".join(f"usb_configs {{ {u} }}\n" for u in usb))


def create(d: Daemon, tmp: Path, name: str, *usb: str) -> None:
    f = tmp / f"{name}.conf"
    f.write_text(conf(name, *usb))
    r = cli(d.socket, "create", str(f))
    assert r.rc == 0, r.out + r.err


def open_errno(d: Daemon, name: str, node: str) -> str:
    return run(d, name, "nopty", "sh", "-c", f"cat {node} 2>&1; true").out


def test_usb_devices_follow_their_usb_configs(cmld_factory: DaemonFactory, guestos_src: Path,
                                              uevent_netns: str) -> None:
    tmp = cmld_factory.tmp
    sysfs = tmp / "sysfs"
    add_device(sysfs, "1-1", "0781", "5567", "AA01", 6)  # present at start (coldplug)
    base = tmp / "cmld-base"
    base.mkdir()
    install_guestos(guestos_src, base)
    d = cmld_factory.start("--stop-timeout", "10", "--sysfs", str(sysfs), "--uevent-netns", uevent_netns, base=base)
    create(d, tmp, "usbc", 'id: "0781:5567" serial: "AA01" assign: true type: GENERIC',
           'id: "0781:5567" serial: "BB02" assign: false type: GENERIC',
           'id: "04e6:5816" serial: "TOK1" assign: true type: TOKEN')
    create(d, tmp, "other")
    create(d, tmp, "thief", 'id: "0781:5567" serial: "AA01" assign: true type: GENERIC')
    create(d, tmp, "badid", 'id: "0781-5567" serial: "x" assign: false type: GENERIC')
    for n in ("usbc", "other"):
        assert start(d, n).rc == 0
        wait_state(d, n, "RUNNING")
    try:
        # bad id: refused with the reason; an assigned device is not given to a second container
        r = start(d, "badid")
        assert r.rc != 0 and "is not vvvv:pppp" in r.out, r.out
        r = start(d, "thief")
        assert r.rc != 0 and "assigned exclusively to container" in r.out, r.out

        # coldplug: the node exists and the cgroup lets it through (no driver here: ENXIO/ENODEV)
        ls = run(d, "usbc", "nopty", "ls", "-l", "/dev/bus/usb/001/").out
        assert f"{USB_MAJOR},   5" in ls and "006" in ls, ls
        err = open_errno(d, "usbc", "/dev/bus/usb/001/006")
        assert "Operation not permitted" not in err and "No such device" in err, err
        assert "No such file" in run(d, "other", "nopty", "ls", "/dev/bus/usb/001/006").out

        # hotplug: a second device with a configured serial; the uevent reaches usbc's netns only
        second = add_device(sysfs, "1-2", "0781", "5567", "BB02", 7)
        usbc_ns = f"/run/netns/{uuid_of(d, 'usbc')}"
        other_ns = f"/run/netns/{uuid_of(d, 'other')}"
        listeners = []
        for ns in (usbc_ns, other_ns):
            s = uevent_socket_in(ns)
            s.bind((0, KERNEL_GROUP))
            s.settimeout(5)
            listeners.append(s)
        kernel = uevent_socket_in(uevent_netns)
        try:
            kernel.sendto(uevent("add", second, "0781", "5567", 7, 100), (0, KERNEL_GROUP))
            got = listeners[0].recv(8192)
            assert got.startswith(f"add@{second}\0".encode()) and b"DEVNAME=bus/usb/001/007" in got, got
            listeners[1].settimeout(1)
            with pytest.raises(socket.timeout):
                listeners[1].recv(8192)
            ls = run(d, "usbc", "nopty", "ls", "-l", "/dev/bus/usb/001/").out
            assert "007" in ls, ls
            assert "Operation not permitted" not in open_errno(d, "usbc", "/dev/bus/usb/001/007")

            # a device with an unknown serial is neither mapped nor forwarded
            stranger = add_device(sysfs, "1-3", "0781", "5567", "ZZ99", 8)
            kernel.sendto(uevent("add", stranger, "0781", "5567", 8, 101), (0, KERNEL_GROUP))
            listeners[0].settimeout(1)
            with pytest.raises(socket.timeout):
                listeners[0].recv(8192)
            assert "008" not in run(d, "usbc", "nopty", "ls", "/dev/bus/usb/001/").out

            # unplug: node gone, access withdrawn (a node made by hand is refused by the cgroup)
            kernel.sendto(uevent("remove", second, "0781", "5567", 7, 102), (0, KERNEL_GROUP))
            listeners[0].settimeout(5)
            assert listeners[0].recv(8192).startswith(f"remove@{second}\0".encode())
            out = run(d, "usbc", "nopty", "sh", "-c", "ls /dev/bus/usb/001/; mknod /tmp/n c 189 6 2>&1; "
                      "cat /tmp/n 2>&1; true").out
            assert "007" not in out and "006" in out, out
            assert "Operation not permitted" in out, out  # 189:6 is no longer the container's

            # malformed and user-space-shaped garbage is ignored; cmld keeps serving
            kernel.sendto(b"\xff" * 300, (0, KERNEL_GROUP))
            kernel.sendto(b"add@../../etc\0ACTION=add\0", (0, KERNEL_GROUP))

            # the token of usbc is plugged, then pulled: usbc is stopped, other keeps running
            token = add_device(sysfs, "1-4", "04e6", "5816", "TOK1", 9)
            kernel.sendto(uevent("add", token, "04e6", "5816", 9, 103), (0, KERNEL_GROUP))
            assert "009" not in run(d, "usbc", "nopty", "ls", "/dev/bus/usb/001/").out  # tokens go to scd
            kernel.sendto(uevent("remove", token, "04e6", "5816", 9, 104), (0, KERNEL_GROUP))
            wait_state(d, "usbc", "STOPPED", timeout=30)
            assert state(d, "other") == "RUNNING" and d.alive()
            assert "its token" in d.log_text() and "was pulled: stopping it" in d.log_text()
        finally:
            kernel.close()
            for s in listeners:
                s.close()
        # the assignment is released with the container: thief may have the device now
        r = start(d, "thief")
        assert r.rc == 0, r.out
        wait_state(d, "thief", "RUNNING")
        assert "006" in run(d, "thief", "nopty", "ls", "/dev/bus/usb/001/").out
    finally:
        for n in ("usbc", "other", "thief"):
            cli(d.socket, "stop", n)
    wait_state(d, "other", "STOPPED")
    assert os.path.isdir(sysfs)


def test_an_allowed_block_device_is_automounted(cmld_factory: DaemonFactory, guestos_src: Path,
                                                uevent_netns: str) -> None:
    """A real block device (a loop device with an ext4 file system) allowed to the container: its
    `add` uevent makes cmld mount it at /media/external/<name> inside the container only."""
    tmp = cmld_factory.tmp
    tree = tmp / "stick"
    tree.mkdir()
    (tree / "hello.txt").write_text("from the stick\n")
    img = tmp / "stick.img"
    with img.open("wb") as f:
        f.truncate(16 << 20)
    subprocess.run(["mkfs.ext4", "-q", "-F", "-d", str(tree), str(img)], check=True, capture_output=True)
    loop = subprocess.run(["losetup", "--find", "--show", str(img)], check=True, capture_output=True,
                          text=True).stdout.strip()
    name = os.path.basename(loop)
    st = os.stat(loop)
    major, minor = os.major(st.st_rdev), os.minor(st.st_rdev)
    try:
        base = tmp / "cmld-base"
        base.mkdir()
        install_guestos(guestos_src, base)
        # a GuestOS whose root is writable (SHARED_RW: the image under a tmpfs overlay), where
        # /media/external can be made, as on a GyroidOS guest
        install_guestos(guestos_src, base, name="rwroot")
        gos_conf = base / "operatingsystems" / "rwroot-1.conf"
        gos_conf.write_text(gos_conf.read_text().replace("mount_type: SHARED\n", "mount_type: SHARED_RW\n", 1))
        d = cmld_factory.start("--stop-timeout", "10", "--uevent-netns", uevent_netns, base=base)
        f = tmp / "am.conf"
        f.write_text(conf("am").replace('guest_os: "busybox"', 'guest_os: "rwroot"')
                     + f'allow_dev: "b {major}:{minor} rwm"\n')
        assert cli(d.socket, "create", str(f)).rc == 0
        create(d, tmp, "plain")
        for n in ("am", "plain"):
            assert start(d, n).rc == 0
            wait_state(d, n, "RUNNING")
        kernel = uevent_socket_in(uevent_netns)
        try:
            devpath = f"/devices/virtual/block/{name}"
            msg = (f"add@{devpath}\0ACTION=add\0DEVPATH={devpath}\0SUBSYSTEM=block\0MAJOR={major}\0MINOR={minor}\0"
                   f"DEVNAME={name}\0DEVTYPE=disk\0SEQNUM=200\0").encode()
            kernel.sendto(msg, (0, KERNEL_GROUP))
        finally:
            kernel.close()
        deadline = __import__("time").monotonic() + 30
        out = ""
        while __import__("time").monotonic() < deadline:
            out = run(d, "am", "nopty", "sh", "-c", f"cat /media/external/{name}/hello.txt 2>&1").out
            if "from the stick" in out:
                break
            __import__("time").sleep(0.5)
        assert out == "from the stick\n", out + d.log_text()[-2000:]
        mounts = run(d, "am", "nopty", "grep", f"/media/external/{name}", "/proc/self/mounts").out
        assert "ext4" in mounts and "nosuid" in mounts and "nodev" in mounts, mounts
        assert "No such file" in run(d, "plain", "nopty", "ls", f"/media/external/{name}").out
        assert f"/media/external/{name}" not in Path("/proc/self/mountinfo").read_text()
        for n in ("am", "plain"):
            cli(d.socket, "stop", n)
        wait_state(d, "am", "STOPPED")
        wait_state(d, "plain", "STOPPED")
    finally:
        subprocess.run(["losetup", "-d", loop], check=False)
