"""System tests inside the QEMU guest (OVMF + swtpm, Debian kernel, systemd as PID 1), one boot:
the suite's units, the TPM and measured boot, cgroup v2 for cmld, dm-crypt over dm-integrity,
and the busybox GuestOS container with its memory limit. The guest collects facts; the
assertions are here, so a failure shows the guest's own output."""

from __future__ import annotations

from pathlib import Path

import pytest

from .harness import UNITS, VM_MARKS, Boot, assert_units_healthy, guest_check

pytestmark = VM_MARKS
ZERO = "0" * 64


def test_units_started_in_order_and_ready(system_boot: Boot) -> None:
    data = guest_check(system_boot, "units")
    assert_units_healthy(data)
    u = data["units"]
    for name in UNITS:
        assert u[name]["StatusText"].startswith("serving /run/socket/"), u[name]
        assert "active (running)" in u[name]["status"], u[name]["status"]
    # Type=notify: each daemon was ready before the next one was even started.
    tpm2d, scd, cmld = (u[n] for n in UNITS)
    assert int(tpm2d["ActiveEnterTimestampMonotonic"]) <= int(scd["ExecMainStartTimestampMonotonic"])
    assert int(scd["ActiveEnterTimestampMonotonic"]) <= int(cmld["ExecMainStartTimestampMonotonic"])
    assert data["verify"]["rc"] == 0 and data["verify"]["output"] == "", data["verify"]
    assert data["failed_units"] == "", data["failed_units"]


def test_cml_control_list_answers_in_the_guest(system_boot: Boot) -> None:
    data = guest_check(system_boot, "units")
    assert data["cml_control_list"]["rc"] == 0, data["cml_control_list"]
    assert "code: CONTAINER_STATUS" in data["cml_control_list"]["output"]


@pytest.mark.req("CR 3.4 (1)")
def test_tpm_present_and_event_log_replays_to_the_pcrs(system_boot: Boot) -> None:
    data = guest_check(system_boot, "tpm")
    assert data["tpmrm0"] and data["tpm_version"] == "2"
    tpm, own, tool = data["tpm_pcrs"], data["own_replay"], data["tpm2_eventlog_replay"]
    for pcr in map(str, range(8)):
        assert tpm[pcr] != ZERO, f"PCR{pcr} was never extended"
        assert own[pcr] == tpm[pcr], f"PCR{pcr}: our replay {own[pcr]} != TPM {tpm[pcr]}"
        assert tool[pcr] == tpm[pcr], f"PCR{pcr}: tpm2_eventlog {tool[pcr]} != TPM {tpm[pcr]}"
    assert own["9"] == tpm["9"], "PCR9 (kernel command line and initrd, by the EFI stub) does not replay"
    assert {"EV_EFI_PLATFORM_FIRMWARE_BLOB", "EV_EFI_BOOT_SERVICES_APPLICATION", "EV_SEPARATOR"} <= set(
        data["event_types"])


def test_cgroup_v2_controllers_are_delegated_to_cmld(system_boot: Boot) -> None:
    data = guest_check(system_boot, "cgroups")
    assert data["fstype"] == "cgroup2fs"
    assert {"memory", "cpu", "pids", "cpuset"} <= set(data["cmld_controllers"]), data
    assert data["cmld_group"].endswith("/cmld.service")


def test_dm_crypt_over_dm_integrity_detects_a_tampered_sector(system_boot: Boot) -> None:
    data = guest_check(system_boot, "dm")
    # the check's own devices (the system data volume, set up before, is open too)
    targets = sorted(line.split()[3] for line in data["tables"] if line.startswith("vmtest-crypt"))
    assert targets == ["crypt", "integrity"], data["tables"]
    assert any("integrity:32:aead" in line for line in data["tables"]), data["tables"]
    assert data["read_back_matches"]
    assert data["read_before"]["ok"], data["read_before"]
    after = data["read_after"]
    assert not after["ok"] and after["errno"] == "EIO", after
    # O_DIRECT gets dm-crypt's own status: BLK_STS_PROTECTION, i.e. EILSEQ.
    assert not data["read_after_direct"]["ok"] and data["read_after_direct"]["errno"] in ("EIO", "EILSEQ")
    assert any("INTEGRITY AEAD ERROR" in line or "Checksum failed" in line for line in data["kernel_log"]), data


@pytest.mark.req("APS 04", "CR 7.1", "CR 7.2")
def test_busybox_container_runs_under_cgroup_v2_with_its_memory_limit(system_boot: Boot) -> None:
    data = guest_check(system_boot, "container")
    assert data["start"]["rc"] == 0 and data["state_after_start"] == "RUNNING", data
    cmld_group = Path("/sys/fs/cgroup") / data["cmld_cgroup"].lstrip("/")
    own = cmld_group.parent if cmld_group.name == "supervisor" else cmld_group
    assert data["container_groups"] == [str(own / data["uuid"])]
    assert data["init_cgroup"] == f"0::{data['cmld_cgroup'].rsplit('/', 1)[0]}/{data['uuid']}"
    assert data["memory_max"] == str(64 << 20)
    assert {"memory", "pids"} <= set(data["controllers"])
    # The hog inside the container is OOM-killed at the limit; the container keeps running.
    assert data["hog"]["rc"] == 137 and "survived" not in data["hog"]["output"], data["hog"]
    assert data["memory_events"]["oom_kill"] > data["oom_kill_before"], data["memory_events"]
    assert data["state_after_hog"] == "RUNNING"
    assert data["stop"]["rc"] == 0 and data["state_after_stop"] == "STOPPED"
    assert not data["group_left_after_stop"]
    # init is /sbin/cservice (from /usr/libexec/cml/cservice), which execs busybox init; the stop
    # is busybox's own halt, never the kill timer.
    log = "\n".join(data["container_log"])
    assert "service reports boot completed" in log and "halt in the container: exit 0" in log, log
    assert "stop timeout" not in log and "ended (signal SIGINT" in log, log


def test_container_reaches_a_host_server_through_its_assigned_nic(system_boot: Boot) -> None:
    """Issue 15 in the VM: the guest's second virtio NIC, named by MAC in `net_ifaces`, moves
    into the container, which reaches the host's loopback server through it (QEMU user network,
    guestfwd, one relayed host connection per guest connection: qemu/cmlvm/relay.py), while its veth
    host0 reaches its gateway; stopped, the NIC is back in cmld's namespace under its own name."""
    from .conftest import MARK, NIC_MAC

    data = guest_check(system_boot, "network")
    assert data["state"] == "RUNNING", data
    assert data["nic_in_cmld_ns_while_running"] == "", data  # it left cmld's namespace
    assert NIC_MAC in data["ifaces"] and "host0" in data["ifaces"], data["ifaces"]
    assert data["configure"]["rc"] == 0, data["configure"]
    assert data["fetch"]["rc"] == 0 and MARK in data["fetch"]["out"], data
    assert data["gateway_ping"]["rc"] == 0, data["gateway_ping"]
    assert data["state_after_stop"] == "STOPPED" and data["nic_after"] == data["nic_before"], data


@pytest.mark.req("CR 2.8", "CR 3.4 (2)")
@pytest.mark.req("TSF Audit", "CR 3.4 (2)")
def test_kernel_audit_records_and_a_dm_integrity_failure_arrive_as_audit_records(system_boot: Boot) -> None:
    """Issue 17: cmld is the guest kernel's audit daemon; the kernel's record of that
    registration, a user message sent over NETLINK_AUDIT and dm-integrity's checksum failure
    (DM_EVENT) are records in cmld's journal, read back with `cml-control audit --json`."""
    data = guest_check(system_boot, "kaudit")
    reg = data["registration"]
    assert reg is not None, data["cmld_kernel_audit_log"]
    assert reg["type"] == "SSA.CMLD.KAUDIT.CONFIG_CHANGE" and reg["meta"]["op"] == "set", reg
    assert reg["meta"]["res"] == "1" and reg["meta"]["msg"].endswith("res=1"), reg  # the whole text
    assert not [ln for ln in data["cmld_kernel_audit_log"] if "malformed" in ln], data["cmld_kernel_audit_log"]
    assert data["user_send_errno"] == 0, data
    user = data["user"]
    assert user is not None and user["type"].endswith("KAUDIT.USER") and user["meta"]["audit_type"] == "1005", user
    assert data["read_tampered"] in ("EIO", "EILSEQ"), data
    dm = data["dm_audit"]
    assert dm is not None, data
    assert dm["type"] == "FSA.CMLD.CONTAINER_MGMT.dm-audit", dm
    assert dm["meta"]["op"] == "integrity-checksum" and dm["meta"]["module"] == "integrity", dm
    assert dm["meta"]["dev"] == data["dm_dev"], (dm, data["dm_dev"])
    assert dm["meta"]["sector"].isdigit() and dm["meta"]["res"] == "0" and dm["meta"]["audit_type"] == "1339", dm
    assert dm["meta"]["label"] == "vmtest-kaudit", dm  # the dm device's name


def test_the_harness_left_nothing_behind(system_boot: Boot) -> None:
    assert not system_boot.work.exists()
    for pid in system_boot.pids:
        assert not Path(f"/proc/{pid}").exists(), f"process {pid} (qemu/swtpm) still there"
    assert system_boot.console_path.exists() and "reboot: Power down" in system_boot.console


# ------------------------------------------------------------ remote attestation (J8, J11-J13)


def agent_outcome(b: Boot, key: str) -> dict[str, object]:
    if b.agent_error:
        raise AssertionError(f"the host agent failed: {b.agent_error}")
    assert b.agent_result is not None and key in b.agent_result, b.agent_result
    out: dict[str, object] = b.agent_result[key]
    return out


def statuses(run: dict[str, object]) -> dict[str, tuple[str, str]]:
    result = run["result"]
    assert isinstance(result, dict), run
    return {c["name"]: (c["status"], c["detail"]) for c in result["checks"]}


@pytest.mark.req("COM 04", "CR 3.4 (1)", "NDR 3.12")
def test_guest_provisioned_with_its_tpm_key_and_attested_from_the_host(system_boot: Boot) -> None:
    data = guest_check(system_boot, "attest")
    assert data["push_cert"]["rc"] == 0 and "DEVICE_CERT_OK" in data["push_cert"]["out"], data["push_cert"]
    good = agent_outcome(system_boot, "good")
    st = statuses(good)
    assert good["rc"] == 0, st
    # Real firmware: OVMF's event log replays to the quoted PCRs 0-7 of the guest's TPM.
    assert st["event log"][0] == "PASS" and "replay to quoted PCRs 0-7" in st["event log"][1], st["event log"]
    assert st["ak binding"][0] == "PASS" and st["certificate"][0] == "PASS", st
    assert st["containers"][0] == "PASS" and st["guestos images"][0] == "PASS", st
    assert st["ima"][0] == "PASS", st["ima"]
    assert len(data["measured"]) >= 1
    # The reference policy made from that boot holds on the next attestation.
    with_policy = statuses(agent_outcome(system_boot, "with_policy"))
    assert with_policy["event log policy"][0] == "PASS", with_policy
    assert with_policy["freshness"][0] == "PASS", with_policy


@pytest.mark.req("COM 04", "CR 1.9")
def test_attestation_fails_for_another_ca_and_after_a_pcr7_change(system_boot: Boot) -> None:
    other = agent_outcome(system_boot, "other_ca")
    assert other["rc"] == 1 and "does not chain to the configured CA" in statuses(other)["certificate"][1]
    tampered = agent_outcome(system_boot, "tampered")
    st = statuses(tampered)
    assert tampered["rc"] == 1
    assert st["event log"] == ("FAIL", st["event log"][1]) and "[7]" in st["event log"][1], st["event log"]


@pytest.mark.req("TSF System Data Storage", "CR 4.1")
def test_fde_key_released_only_in_the_same_pcr7_state(system_boot: Boot) -> None:
    data = guest_check(system_boot, "attest")
    first, second, after = data["fde_first"], data["fde_second"], data["fde_after_tamper"]
    assert first["rc"] == 0 and "FDE_OK" in first["out"] and first["mapped"], first
    assert first.get("unmapped", {}).get("rc") == 0, first  # the mapping went away before the second boot's map
    assert second["rc"] == 0 and second["read_marker"], second  # the same key from NV, real dm-crypt
    assert after["rc"] == 1 and "FDE_AUTH_FAILED" in after["out"], after
