"""Container data encrypted and integrity-protected, GuestOS images verified block by block, the
system data key in the TPM (issue 14), asserted on the facts the guest collected in the system
scenario (qemu/guest/vmcheck: sysdata_setup, crypt, verity, cryptcrash, then after a reboot
sysdata_boot and destroy, and after the forced reboot sysdata_destroyed)."""

from __future__ import annotations

import json
import re
from typing import Any

import pytest

from .harness import VM_MARKS, Boot, guest_check

pytestmark = VM_MARKS
C0 = "00000000-0000-0000-0000-000000000000"
MARK = "cml-secret-7d1e5c"
EIO = ("Input/output error", "I/O error")


def one(lines: list[str], pattern: str) -> str:
    found = [ln for ln in lines if re.search(pattern, ln)]
    assert found, f"no line matches {pattern!r} in:\n" + "\n".join(lines)
    return found[0]


@pytest.mark.req("TSF System Data Storage", "CR 4.1")
def test_system_data_volume_set_up_with_a_sealed_key(system_boot: Boot) -> None:
    d = guest_check(system_boot, "sysdata_setup")
    assert d["setup"]["rc"] == 0 and "recovery key: <redacted>" in d["setup"]["out"], d["setup"]
    assert d["setup_again"]["rc"] == 1 and "exists" in d["setup_again"]["out"], d["setup_again"]
    assert "open: yes" in d["status"] and "mounted: yes" in d["status"], d["status"]
    # cmld's data directories are bound from the volume; the key is in the kernel keyring, not the table.
    for sub in ("/var/lib/cml/sysdata ", "/var/lib/cml/containers ", "/var/lib/cml/keys "):
        assert any(sub in ln for ln in d["mounts"]), (sub, d["mounts"])
    assert " crypt aes-xts-plain64 :64:logon:cryptsetup:" in d["table"], d["table"]
    assert "pbkdf2" in d["luks_dump"] and re.search(r"^\s*0: luks2", d["luks_dump"], re.M), d["luks_dump"]
    assert json.loads(d["config"])["device"] == "/dev/vdb"
    assert d["cmld_active"] == "active" and d["list"] == 0


@pytest.mark.req("TSF Container Data Storage", "CR 4.1")
def test_encrypted_container_keeps_its_data_and_shows_its_stack(system_boot: Boot) -> None:
    d = guest_check(system_boot, "crypt")
    u = d["uuid"]
    assert "CONTAINER_CHANGE_PIN_SUCCESSFUL" in d["pair"], d["pair"]
    assert "CONTAINER_START_OK" in d["start1"] and d["state1"] == "RUNNING", d["start1"]
    assert d["cryptfs_mode"] == "INTEGRITY_ENCRYPT"
    integrity, crypt = d["tables"][f"{u}-data-integrity"], d["tables"][f"{u}-data"]
    assert re.search(r"^0 32768 integrity 7:\d+ 0 32 J \d+ meta_device:7:\d+ .*internal_hash:hmac\(sha256\):0+",
                     integrity), integrity
    assert re.search(r"^0 32768 crypt aes-xts-plain64 0{128} 0 253:\d+ 0 1 allow_discards$", crypt), crypt
    assert {"data.img", "data.meta.img", "not-stacked", "token_is_paired"} <= set(d["files"]), d["files"]
    assert d["meta_size"] == int(16 * 2**20 * 0.1) and d["key_file_bytes"] > 96
    assert d["write"]["rc"] == 0, d["write"]
    assert d["mark_through_dm"] and not d["mark_on_disk_in_plaintext"]  # only ciphertext on the disk
    assert d["dm_after_stop"] == [] and d["loops_after_stop"] == [], d
    assert d["state2"] == "RUNNING" and MARK in d["reread"]["out"] and d["blob_md5"] in d["reread"]["out"], d


@pytest.mark.req("TSF Container Data Storage")
def test_tampered_volume_gives_eio_zombie_and_a_wipe_recovers(system_boot: Boot) -> None:
    d = guest_check(system_boot, "crypt")
    u = d["uuid"]
    assert d["tamper_read"]["rc"] != 0 and any(e in d["tamper_read"]["out"] for e in EIO), d["tamper_read"]
    assert d["tamper_state"] == "ZOMBIE", d
    line = one(d["tamper_log"], rf"container vcrypt \({u}\): volume data is corrupted: dm-integrity on dm-\d+ "
                                rf"\(/dev/mapper/{u}-data-integrity\) failed at sector 0x[0-9a-f]+")
    assert "Checksum failed" in line, line
    assert any("Checksum failed at sector" in ln for ln in d["tamper_kernel"]), d["tamper_kernel"]
    assert d["tamper_dm_left"] == []
    assert d["plain_state"] == "RUNNING" and d["plain_state_after"] == "RUNNING"  # nothing else affected
    assert d["plain_cryptfs_mode"] == "NOT_IMPLEMENTED"  # no token: no key (logged, see README)
    assert "CONTAINER_START_EINTERNAL" in d["start_zombie"], d["start_zombie"]
    assert "CMD_OK" in d["wipe"] and d["after_wipe_state"] == "STOPPED"
    assert d["after_wipe_files"] == ["not-stacked", "token_is_paired"] and not d["after_wipe_key"]
    assert d["state3"] == "RUNNING" and "secret.txt" not in d["after_wipe_ls"]["out"], d["after_wipe_ls"]


@pytest.mark.req("TSF Container Data Storage", "CR 4.2")
def test_a_removed_container_leaves_no_key_and_no_headers(system_boot: Boot) -> None:
    d = guest_check(system_boot, "crypt")
    assert not d["key_before_zero"] and "CMD_OK" in d["remove"]
    assert not (d["removed_dir_left"] or d["removed_key_left"] or d["removed_token_left"])
    assert d["left_key_all_zero"] and d["left_data.img_header_zero"] and d["left_data.meta.img_header_zero"], d


def test_legacy_images_open_as_authenc(system_boot: Boot) -> None:
    d = guest_check(system_boot, "crypt")
    assert d["legacy_state"] == "RUNNING" and d["legacy_mode"] == "AUTHENC", d
    tables = "\n".join(d["legacy_tables"].values())
    assert "crypt capi:authenc(hmac(sha256),xts(aes))-random" in tables and "integrity:32:aead" in tables, tables
    assert re.search(r"integrity 7:\d+ 0 32 J \d+ meta_device:7:\d+", tables), tables


def test_first_format_reports_progress_and_survives_a_kill(system_boot: Boot) -> None:
    d = guest_check(system_boot, "crypt")
    assert any(re.search(r"first format of data\.img \(INTEGRITY_ENCRYPT, 48 MiB\): \d+ %$", ln)
               for ln in d["big_progress_before_kill"]), d["big_progress_before_kill"]
    # STARTING throughout (a first poll may still see STOPPED, before the start request reached cmld)
    assert "STARTING" in d["big_states_during_format"], d["big_states_during_format"]
    assert set(d["big_states_during_format"]) <= {"STOPPED", "STARTING"}, d["big_states_during_format"]
    assert d["big_list_latencies"], d  # every `list` during the format was answered (rc checked in the guest)
    after = d["big_after_kill"]
    assert after["state"] == "STOPPED" and after["dm"] == [] and after["loops"] == [], after
    assert "data.formatting" in after["files"], after
    assert d["big_state"] == "RUNNING", d["big_start"]
    one(d["big_redo_log"], r"first format of data\.img was interrupted; formatting it again")
    one(d["big_redo_log"], r"data\.img formatted in [\d.]+ s")
    assert "data.formatting" not in d["big_files"]
    # every container's devices are gone; the system data volume (set up before) stays open
    assert d["dm_devices_at_end"] == ["cml-sysdata"], d["dm_devices_at_end"]


def test_cmld_killed_during_start_stop_and_run_leaves_nothing_and_data_intact(system_boot: Boot) -> None:
    d = guest_check(system_boot, "cryptcrash")
    problems = [r for r in d["rounds"] if r["state"] != "STOPPED" or r["dm"] or r["loops"] or r["formatting_marker"]]
    assert problems == [], json.dumps(problems, indent=1)
    assert len(d["rounds"]) == 6
    assert any(r["dm_at_kill"] for r in d["rounds"] if "dm_at_kill" in r), "no kill hit a start with devices up"
    assert any("recovery: removed the dm device" in ln for ln in d["recovery_log"]), d["recovery_log"]
    assert d["final_state"] == "RUNNING" and d["final_read"]["mark"] in d["final_read"]["out"], d["final_read"]


def test_verity_guestos_verified_block_by_block(system_boot: Boot) -> None:
    d = guest_check(system_boot, "verity")
    u = d["uuid"]
    assert d["state"] == "RUNNING", d["start"]
    one(d["log"], r"root\.img opened with dm-verity")
    one(d["log"], r"background check of root\.img passed \(sha256 [0-9a-f]{64}\)")
    assert re.search(r"^0 \d+ verity 1 7:\d+ 7:\d+ 4096 4096 \d+ 1 sha256 [0-9a-f]{64} [0-9a-f]{64}$",
                     d["tables"][f"{u}-root"]), d["tables"]
    assert d["status"].endswith(" V"), d["status"]
    assert any(ln.startswith(f"/dev/mapper/{u}-root / ") for ln in d["mounts"]), d["mounts"]


def test_tampered_verity_image_ends_as_zombie(system_boot: Boot) -> None:
    d = guest_check(system_boot, "verity")
    u = d["uuid"]
    assert d["read_tampered"]["rc"] != 0 and any(e in d["read_tampered"]["out"] for e in EIO), d["read_tampered"]
    assert d["state_tampered"] == "ZOMBIE"
    one(d["tamper_log"], rf"container vver \({u}\): volume root is corrupted: dm-verity on dm-\d+ "
                         rf"\(/dev/mapper/{u}-root\) failed at data block \d+")
    assert any("data block" in ln and "is corrupted" in ln for ln in d["kernel"]), d["kernel"]
    assert d["dm_left"] == []
    assert d["state_bg"] == "ZOMBIE", d
    one(d["bg_log"], r"background check: root\.img is corrupted or tampered with")
    assert d["state_repaired"] == "RUNNING" and "readable" in d["read_repaired"]["out"], d
    assert d["dm_after_stop"] == []


@pytest.mark.req("TSF System Data Storage", "CR 4.1")
def test_system_data_volume_opens_at_boot_and_with_the_recovery_key(system_boot: Boot) -> None:
    d = guest_check(system_boot, "sysdata_boot")
    unit = d["boot_unit"]
    assert unit["ActiveState"] == "active" and "system data volume open" in unit["journal"], unit
    assert d["pcr7_matches_setup"] and d["cmld_active"] == "active"
    assert d["vcrypt_state"] == "RUNNING" and d["vcrypt_read"]["mark"] in d["vcrypt_read"]["out"], d["vcrypt_read"]
    # PCR 7 changed: no key without a PIN; the recovery key opens it; a newly signed policy too.
    assert d["open_pcr7_changed"]["rc"] == 1, d["open_pcr7_changed"]
    assert "do not have the values the signed policy expects" in d["open_pcr7_changed"]["out"]
    assert "open: no" in d["open_is_open"]
    assert d["open_recovery"]["rc"] == 0, d["open_recovery"]
    assert d["open_new_policy"]["rc"] == 0, d["open_new_policy"]


def test_c0_volume_is_integrity_only_with_its_raw_key(system_boot: Boot) -> None:
    d = guest_check(system_boot, "sysdata_boot")
    for key in ("c0", "c0_again", "c0_third"):
        assert d[f"{key}_state"] == "RUNNING" and d[f"{key}_mode"] == "INTEGRITY_ONLY", (key, d)
    tables: dict[str, Any] = d["c0_tables"]
    assert list(tables) == [f"{C0}-data-integrity"], tables
    assert "internal_hash:hmac(sha256):" in tables[f"{C0}-data-integrity"]
    assert d["c0_key_bytes"] == 32 and d["c0_key_mode"] == "0o600"


@pytest.mark.req("TSF System Data Storage", "CR 4.2")
def test_destroy_system_clears_the_key_and_reboots(system_boot: Boot) -> None:
    d = guest_check(system_boot, "destroy")
    assert not d["hosted"] and d["keyslots_before"] == ["0"], d
    assert d["reply"]["rc"] == 0 and "CMD_OK" in d["reply"]["out"], d["reply"]
    after = guest_check(system_boot, "sysdata_destroyed")
    assert after["keyslots"] == [] and after["luks_header_left"], after  # no keyslot: no key, recovery or not
    assert after["boot_unit"]["ActiveState"] == "failed", after["boot_unit"]
    assert after["cmld"]["ActiveState"] != "active"  # never on the empty directories underneath
    assert after["open"]["rc"] == 1 and after["open_recovery"]["rc"] == 1, after
    assert system_boot.results is not None and len(system_boot.results.get("boot_uptimes", [])) == 2
