"""Pure logic of the GuestOS lifecycle and device operations: which version a container runs
(pinned with signed configs), which versions are obsolete, completeness, token changes, and the
disk space a container needs."""

from __future__ import annotations

from pathlib import Path

import pytest

from cml_common.messages.container_pb2 import ContainerConfig, ContainerTokenType, ContainerUsbType
from cml_common.messages.guestos_pb2 import GuestOSConfig, GuestOSMount
from cml_common.textconfig import to_text
from cmld.containers import disk_space
from cmld.containers.token_change import token_changed
from cmld.guestos import images
from cmld.guestos.select import GuestOSUnavailable, for_container, in_use, obsolete
from cmld.guestos.store import GuestOSStore

pytestmark = pytest.mark.unit
M = GuestOSMount


def gos(version: int, *, verity: bool = False) -> GuestOSConfig:
    cfg = GuestOSConfig(name="os", hardware="x86", version=version)
    cfg.description.en = "t"
    cfg.mounts.add(image_file="root", mount_point="/", fs_type="ext4", mount_type=M.SHARED, image_size=4,
                   image_verity_sha256="ab" * 32 if verity else "")
    cfg.mounts.add(image_file="extra", mount_point="/x", fs_type="ext4", mount_type=M.STORE_ONLY, image_size=2)
    cfg.mounts.add(image_file="data", mount_point="/data", fs_type="ext4", mount_type=M.EMPTY, def_size=64)
    return cfg


def store(tmp: Path, complete: dict[int, bool]) -> GuestOSStore:
    for v, full in complete.items():
        (tmp / f"os-{v}.conf").write_text(to_text(gos(v)))
        (tmp / f"os-{v}").mkdir()
        (tmp / f"os-{v}" / "root.img").write_bytes(b"r" * 4)
        if full:
            (tmp / f"os-{v}" / "extra.img").write_bytes(b"e" * 2)
    s = GuestOSStore(tmp)
    s.load()
    return s


def test_completeness_needs_every_image_with_its_size(tmp_path: Path) -> None:
    cfg = gos(1, verity=True)
    assert [f.name for f in images.image_files(cfg)] == ["root.hash.img", "root.img", "extra.img"]
    (tmp_path / "root.img").write_bytes(b"r" * 4)
    (tmp_path / "extra.img").write_bytes(b"e" * 3)
    assert [f.name for f in images.missing(tmp_path, cfg)] == ["root.hash.img", "extra.img"]
    (tmp_path / "root.hash.img").write_bytes(b"h")
    (tmp_path / "extra.img").write_bytes(b"e" * 2)
    assert images.is_complete(tmp_path, cfg)


def test_signed_configs_pin_the_version(tmp_path: Path) -> None:
    s = store(tmp_path, {1: True, 2: True, 3: False})
    pinned = ContainerConfig(name="c", guest_os="os", guestos_version=1)
    assert for_container(s, pinned, signed_configs=True).version == 1
    assert for_container(s, pinned, signed_configs=False).version == 2  # newest complete
    with pytest.raises(GuestOSUnavailable, match=r"version 7 .* \(installed: 1, 2, 3\)"):
        for_container(s, ContainerConfig(name="c", guest_os="os", guestos_version=7), signed_configs=True)
    with pytest.raises(GuestOSUnavailable, match="asks for version 3 or newer"):
        for_container(s, ContainerConfig(name="c", guest_os="os", guestos_version=3), signed_configs=False)


def test_obsolete_versions_are_older_than_the_newest_complete_and_unused(tmp_path: Path) -> None:
    s = store(tmp_path, {1: True, 2: True, 3: True, 4: False})
    used = in_use(s, [ContainerConfig(name="c", guest_os="os", guestos_version=2)], signed_configs=True)
    assert used == {("os", 2)}
    assert [g.version for g in obsolete(s, used)] == [1]
    victim = s.get("os", 1)
    assert victim is not None
    s.purge(victim)
    assert not (tmp_path / "os-1").exists() and not (tmp_path / "os-1.conf").exists()
    assert s.versions("os") == [2, 3, 4]


def usb(serial: str | None, token: int = ContainerTokenType.USB) -> ContainerConfig:
    cfg = ContainerConfig(name="c", guest_os="os", token_type=token)
    if serial is not None:
        cfg.usb_configs.add(id="1234:5678", serial=serial, assign=True, type=ContainerUsbType.TOKEN)
    return cfg


def test_token_changes() -> None:
    soft, none = usb(None, ContainerTokenType.SOFT), usb(None, ContainerTokenType.NONE)
    assert token_changed(soft, soft) is None
    assert token_changed(soft, none) == "token type SOFT -> NONE"
    assert token_changed(usb("A"), usb("A")) is None
    assert token_changed(usb("A"), usb("B")) == "USB token serial A -> B"
    assert token_changed(usb("A"), usb(None)) is not None  # the original: no serial counts as changed


def test_disk_space_required_and_reserve(tmp_path: Path) -> None:
    cfg = gos(1)
    cfg.mounts.add(image_file="tmp", mount_point="/tmp", fs_type="tmpfs", mount_type=M.EMPTY, def_size=100)
    cfg.mounts.add(image_file="usr", mount_point="/usr", fs_type="ext4", mount_type=M.OVERLAY_RW, def_size=10)
    c = ContainerConfig(name="c", guest_os="os")
    c.image_sizes.add(image_name="data", image_size=20)
    assert disk_space.required_bytes(cfg, c) == int((20 + 10) * (1 << 20) * 1.1)
    with pytest.raises(Exception, match="must stay free"):
        disk_space.check(tmp_path, 1 << 62, "x")
    disk_space.check(tmp_path, 0, "x")


def test_device_conf_slot(tmp_path: Path) -> None:
    import struct

    from cmld.device import ab_slot

    plain = tmp_path / "device.conf"
    efivars = tmp_path / "efivars"
    efivars.mkdir()
    var = efivars / f"BootCurrent-{ab_slot.EFI_GLOBAL}"
    assert ab_slot.device_conf_path(plain, efivars) == plain  # nothing there: the plain path
    (tmp_path / "device.conf.A").write_text("")
    (tmp_path / "device.conf.B").write_text("")
    assert ab_slot.device_conf_path(plain, efivars) == plain  # no BootCurrent: unknown slot
    var.write_bytes(struct.pack("<IH", 7, 0))
    assert ab_slot.device_conf_path(plain, efivars).name == "device.conf.A"
    var.write_bytes(struct.pack("<IH", 7, 1))
    assert ab_slot.device_conf_path(plain, efivars).name == "device.conf.B"
    var.write_bytes(b"\x07\x00\x00\x00\x01")  # truncated variable
    assert ab_slot.device_conf_path(plain, efivars) == plain
    var.write_bytes(struct.pack("<IH", 7, 1))
    plain.write_text("")  # the set-up is not complete while the plain file exists
    assert ab_slot.device_conf_path(plain, efivars) == plain


def test_huge_image_sizes_are_refused_not_a_crash(tmp_path: Path) -> None:
    c = ContainerConfig(name="c", guest_os="os")
    c.image_sizes.add(image_name="data", image_size=(1 << 64) - 1)
    with pytest.raises(Exception, match="not enough disk space"):
        disk_space.check(tmp_path, disk_space.required_bytes(gos(1), c), "c")
