"""Kernel uevent parsing and USB ids / sysfs lookups (hostile input included)."""

from __future__ import annotations

from pathlib import Path

import pytest

from cmld.device.uevent import UEventError, parse
from cmld.device.usb import parse_usb_id, scan, serial_of

pytestmark = pytest.mark.unit


def test_parse_a_usb_device_event() -> None:
    ev = parse(b"add@/devices/usb1/1-1\0ACTION=add\0DEVPATH=/devices/usb1/1-1\0SUBSYSTEM=usb\0MAJOR=189\0"
               b"MINOR=5\0DEVNAME=/dev/bus/usb/001/006\0DEVTYPE=usb_device\0PRODUCT=781/5567/100\0")
    assert (ev.action, ev.devpath, ev.subsystem, ev.devtype) == ("add", "/devices/usb1/1-1", "usb", "usb_device")
    assert ev.device == (189, 5) and ev.devname == "bus/usb/001/006" and ev.usb_id == (0x781, 0x5567)
    assert ev.dev_type == "c"


@pytest.mark.parametrize("raw", [b"", b"\xff" * 50, b"add", b"add@relative\0", b"@/x\0",
                                 b"add@/x\0ACTION=remove\0", b"add@/a/../../etc\0", b"add@/x\0" + b"A" * 9000])
def test_hostile_messages_are_refused(raw: bytes) -> None:
    with pytest.raises(UEventError):
        parse(raw)


def test_missing_fields_are_none() -> None:
    ev = parse(b"change@/devices/x\0MAJOR=abc\0PRODUCT=zz\0")
    assert ev.device is None and ev.usb_id is None and ev.devname == ""


@pytest.mark.parametrize("bad", ["0781-5567", "781:5567", "xyzw:0000", "", "07815:567"])
def test_usb_id(bad: str) -> None:
    assert parse_usb_id("0781:5567") == (0x0781, 0x5567)
    with pytest.raises(ValueError, match="vvvv:pppp"):
        parse_usb_id(bad)


def test_sysfs_scan_and_serial(tmp_path: Path) -> None:
    dev = tmp_path / "devices" / "usb1" / "1-1"
    dev.mkdir(parents=True)
    for k, v in (("idVendor", "0781"), ("idProduct", "5567"), ("serial", "AA01"), ("dev", "189:5"),
                 ("busnum", "1"), ("devnum", "6"), ("uevent", "MAJOR=189\nMINOR=5\n")):
        (dev / k).write_text(v + "\n")
    iface = tmp_path / "devices" / "usb1" / "1-1:1.0"
    iface.mkdir()
    links = tmp_path / "bus" / "usb" / "devices"
    links.mkdir(parents=True)
    (links / "1-1").symlink_to(dev)
    (links / "1-1:1.0").symlink_to(iface)
    [d] = scan(tmp_path)
    assert (d.devpath, d.vendor, d.product, d.serial, d.major, d.minor, d.devname) == (
        "/devices/usb1/1-1", 0x781, 0x5567, "AA01", 189, 5, "bus/usb/001/006")
    assert serial_of("/devices/usb1/1-1", tmp_path) == "AA01"
    assert serial_of("/devices/../../etc", tmp_path) == ""
    assert scan(tmp_path / "nothing") == []
