"""The pure parts of the volume crypto: the original's tables and key split, the mode decision, the
dm-integrity superblock, the kernel's error lines, the fill progress, stale-device selection and
the system data volume's config file. The devices themselves are tested in the VM tier."""

from __future__ import annotations

import json
import struct
from pathlib import Path

import pytest

from cml_common.messages.container_pb2 import CryptfsMode as CM
from cmld.crypt import fill, kmsg, mode, recovery, superblock, tables
from cmld.crypt.dm import DmDevice
from cmld.sysdata import config as sysdata_config

pytestmark = pytest.mark.unit
KEY = bytes(range(96))
UUID = "1b4e28ba-2fa1-11d2-883f-0016d3cca427"


def test_integrity_encrypt_key_split_is_the_originals() -> None:
    k = tables.split_key(CM.INTEGRITY_ENCRYPT, KEY)
    assert k.crypt_hex == KEY[:64].hex() and len(k.crypt_hex) == 128  # first 128 hex digits: XTS-512
    assert k.hmac_hex == KEY[64:].hex() and len(k.hmac_hex) == 64  # next 64: HMAC-SHA256
    assert k.note == ""


@pytest.mark.parametrize(("mode_", "key"), [(CM.INTEGRITY_ENCRYPT, KEY[:95]), (CM.INTEGRITY_ENCRYPT, KEY + b"x"),
                                           (CM.INTEGRITY_ONLY, KEY), (CM.INTEGRITY_ONLY, b""),
                                           (CM.AUTHENC, b""), (CM.NOT_IMPLEMENTED, KEY)])
def test_keys_of_the_wrong_length_are_refused(mode_: int, key: bytes) -> None:
    with pytest.raises(tables.BadKey):
        tables.split_key(mode_, key)


def test_c0_and_legacy_keys() -> None:
    assert tables.split_key(CM.INTEGRITY_ONLY, KEY[:32]) == tables.SplitKey("", KEY[:32].hex())
    legacy = tables.split_key(CM.AUTHENC, bytes(64))  # c0's legacy dummy key: accepted with a note
    assert legacy.crypt_hex == "0" * 128 and legacy.hmac_hex == "" and "64 bytes" in legacy.note
    assert tables.split_key(CM.AUTHENC, KEY).note == ""


def test_tables_are_the_originals() -> None:
    h = KEY[64:].hex()
    assert tables.integrity_table(20480, "/dev/loop0", "/dev/loop1", h) == (
        f"0 20480 integrity /dev/loop0 0 32 J 3 meta_device:/dev/loop1 internal_hash:hmac(sha256):{h} "
        "allow_discards\n")
    assert tables.integrity_table(8, "/dev/loop0", "/dev/loop1", "") == (
        "0 8 integrity /dev/loop0 0 32 J 1 meta_device:/dev/loop1\n")
    assert tables.crypt_table(20480, "/dev/mapper/x-integrity", "ab", authenc=False) == (
        "0 20480 crypt aes-xts-plain64 ab 0 /dev/mapper/x-integrity 0 1 allow_discards\n")
    assert tables.crypt_table(8, "/dev/mapper/x-integrity", "ab", authenc=True) == (
        "0 8 crypt capi:authenc(hmac(sha256),xts(aes))-random ab 0 /dev/mapper/x-integrity 0 1 "
        "integrity:32:aead\n")
    assert tables.top_name(CM.INTEGRITY_ONLY, "u-data") == "u-data-integrity"
    assert tables.top_name(CM.INTEGRITY_ENCRYPT, "u-data") == "u-data"
    assert tables.meta_size(10 << 20) == 1048576 and tables.meta_size(64 << 20) == 6710886


def _dir(tmp_path: Path, *files: str) -> Path:
    d = tmp_path / "c"
    d.mkdir()
    for f in files:
        (d / f).write_bytes(b"")
    return d


def test_fresh_container_gets_not_stacked_and_integrity_modes(tmp_path: Path) -> None:
    d = _dir(tmp_path)
    assert mode.choose(d, is_c0=False, dm_unavailable="", has_key=True) == mode.ModeChoice(
        CM.INTEGRITY_ENCRYPT, create_marker=True)
    assert mode.choose(d, is_c0=True, dm_unavailable="", has_key=True).mode == CM.INTEGRITY_ONLY
    assert mode.choose(tmp_path / "missing", is_c0=False, dm_unavailable="", has_key=True).create_marker


def test_marker_legacy_and_plain_images(tmp_path: Path) -> None:
    marked = _dir(tmp_path, "not-stacked", "data.img", "data.meta.img")
    assert mode.choose(marked, is_c0=False, dm_unavailable="", has_key=True) == mode.ModeChoice(CM.INTEGRITY_ENCRYPT)
    (tmp_path / "c" / "not-stacked").unlink()
    assert mode.choose(marked, is_c0=True, dm_unavailable="", has_key=True).mode == CM.AUTHENC  # the original's legacy
    (tmp_path / "c" / "data.meta.img").unlink()
    plain = mode.choose(marked, is_c0=False, dm_unavailable="", has_key=True)
    assert plain.mode == CM.NOT_IMPLEMENTED and plain.usable and "unencrypted" in plain.reason


def test_why_volumes_stay_plain_or_cannot_open(tmp_path: Path) -> None:
    d = _dir(tmp_path)
    no_dm = mode.choose(d, is_c0=False, dm_unavailable="/dev/mapper/control: no device-mapper", has_key=True)
    assert no_dm.mode == CM.NOT_IMPLEMENTED and "no device-mapper" in no_dm.reason and not no_dm.create_marker
    no_token = mode.choose(d, is_c0=False, dm_unavailable="", has_key=False)
    assert no_token.mode == CM.NOT_IMPLEMENTED and "no token" in no_token.reason
    (d / "not-stacked").write_bytes(b"")
    stuck = mode.choose(d, is_c0=False, dm_unavailable="no dm", has_key=True)
    assert stuck.mode == CM.INTEGRITY_ENCRYPT and not stuck.usable and "no dm" in stuck.reason
    keyless = mode.choose(d, is_c0=False, dm_unavailable="", has_key=False)
    assert not keyless.usable and "no key" in keyless.reason


def test_integrity_superblock(tmp_path: Path) -> None:
    sb = b"integrt\x00" + bytes([2, 0, 32, 0, 11, 0, 0, 0]) + struct.pack("<Q", 131072)
    assert superblock.provided_data_sectors(sb) == 131072
    assert superblock.provided_data_sectors(bytes(24)) is None
    assert superblock.provided_data_sectors(sb[:20]) is None
    assert superblock.provided_data_sectors(b"integrx\x00" + sb[8:]) is None
    meta = tmp_path / "data.meta.img"
    meta.write_bytes(bytes(4096))
    assert superblock.needs_initial_format(meta, 131072)
    meta.write_bytes(sb + bytes(100))
    assert not superblock.needs_initial_format(meta, 131072)
    assert superblock.needs_initial_format(meta, 131073)  # the original: any other size formats anew


@pytest.mark.parametrize(("record", "want"), [
    ("3,512,190049170,-;device-mapper: verity: 7:3: data block 599 is corrupted",
     ("verity", "7:3", "data block 599")),
    ("3,13,5,-;device-mapper: verity: 7:12: metadata block 7 is corrupted", ("verity", "7:12", "metadata block 7")),
    ("3,1,2,-;device-mapper: integrity: dm-3: Checksum failed at sector 0x1a40",
     ("integrity", "dm-3", "sector 0x1a40")),
    ("device-mapper: integrity: Checksum failed at sector 0x8", ("integrity", "", "sector 0x8")),
    ("3,1,2,-;device-mapper: crypt: dm-4: INTEGRITY AEAD ERROR, sector 6720", ("crypt", "dm-4", "sector 6720")),
])
def test_kernel_dm_error_lines(record: str, want: tuple[str, str, str]) -> None:
    ev = kmsg.parse(record)
    assert ev is not None and (ev.target, ev.device, ev.where) == want
    assert ev.line.startswith("device-mapper:")


@pytest.mark.parametrize("record", ["6,500,1,-;EXT4-fs (dm-1): mounted filesystem", "", ";", "garbage\x00\xff",
                                    "3,1,1,-;device-mapper: verity: 7:3: data block x is corrupted",
                                    "3,1,1,-;device-mapper: integrity: dm-3: Checksum failed at sector zz"])
def test_other_kernel_lines_are_ignored(record: str) -> None:
    assert kmsg.parse(record) is None


def test_fill_progress_lines() -> None:
    assert fill.parse_progress("progress 4194304 67108864\n") == (4194304, 67108864)
    for bad in ("progress 5 4", "progress -1 4", "progress 1 0", "progress a b", "done", "progress 1", ""):
        assert fill.parse_progress(bad) is None


def test_stale_devices_are_only_ours() -> None:
    devs = [DmDevice(f"{UUID}-data", f"CML-{UUID}-data", "dm-1", ("dm-0",)),
            DmDevice(f"{UUID}-data-integrity", f"CML-{UUID}-data-integrity", "dm-0", ("loop0", "loop1")),
            DmDevice(f"{UUID}-root", f"CRYPT-VERITY-aa-{UUID}-root", "dm-2", ("loop2", "loop3")),
            DmDevice("other-root", "CRYPT-VERITY-bb-other-root", "dm-3", ()),
            DmDevice("cml-sysdata", "CRYPT-LUKS2-cc-cml-sysdata", "dm-4", ("vdb",)),
            DmDevice("lvm-home", "LVM-xyz", "dm-5", ())]
    assert recovery.stale_names(devs, {UUID}) == [f"{UUID}-data", f"{UUID}-data-integrity", f"{UUID}-root"]
    assert recovery.stale_names(devs, set()) == [f"{UUID}-data", f"{UUID}-data-integrity"]


def test_sysdata_config_round_trip_and_damage(tmp_path: Path) -> None:
    assert sysdata_config.load(tmp_path) is None
    cfg = sysdata_config.SysdataConfig("/dev/vdb", "2dac8317-697d-4380-bdc4-81e8fb70eac3", "sysdata-0a1b2c3d")
    cfg.save(tmp_path)
    assert sysdata_config.load(tmp_path) == cfg
    assert (tmp_path / "sysdata.conf").stat().st_mode & 0o777 == 0o600
    for bad in ("{", "[]", json.dumps({"device": "/dev/vdb"}),
                json.dumps({"device": "vdb", "luks_uuid": cfg.luks_uuid, "seal_name": "x"}),
                json.dumps({"device": "/dev/vdb", "luks_uuid": "nope", "seal_name": "x"}),
                json.dumps({"device": "/dev/vdb", "luks_uuid": cfg.luks_uuid, "seal_name": "../x"}),
                json.dumps({"device": "/dev/vdb", "luks_uuid": cfg.luks_uuid, "seal_name": "x", "dirs": ["../etc"]})):
        (tmp_path / "sysdata.conf").write_text(bad)
        with pytest.raises(sysdata_config.ConfigError):
            sysdata_config.load(tmp_path)
