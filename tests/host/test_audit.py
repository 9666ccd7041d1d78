"""The audit subsystem end to end with the real cmld and scd: each event class leaves its record
with the client's identity, the journal's checkpoints are signed by scd's device key, the
verifier passes the untouched journal and detects every tampering, and `cml-control audit`
prints, filters and follows."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import time
import uuid as uuidlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from ..conftest import BIN, DaemonFactory, cli, is_root
from .auditlib import edit_record_time, journal_entries, of_type, rechain
from .containers import container_conf, demo_guestos, wait_state
from .scdlib import SIGNED_DEVICE_CONF, make_pki, scd_and_cmld, sign

pytestmark = [pytest.mark.host, pytest.mark.skipif(not is_root(), reason="needs root")]
AUDIT_CONF = SIGNED_DEVICE_CONF + "audit_size: 1\naudit_checkpoint_records: 5\naudit_checkpoint_seconds: 1\n"
PIN = "pin-7Q3xK"


@dataclass
class Audited:
    audit_dir: Path  # a copy of the stopped cmld's audit directory
    cert: Path  # the device certificate scd made
    entries: list[dict[str, object]]
    app_entries: list[dict[str, object]]
    app_uuid: str
    follow_out: str


def verify(audit_dir: Path, cert: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(BIN / "cml-control"), "audit", "verify", "--dir", str(audit_dir), "--cert", str(cert),
                           *extra], capture_output=True, text=True, timeout=60, check=False)


def signed_conf(tmp: Path, pki: Path, name: str, text: str) -> tuple[Path, Path, Path]:
    conf = tmp / f"{name}-{uuidlib.uuid4().hex[:6]}.conf"
    conf.write_text(text)
    sig, cert = sign(conf, pki)
    return conf, sig, cert


@pytest.fixture(scope="module")
def audited(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Audited]:
    """One device's life: a refused signature, a token container with a wrong PIN, a container
    started and stopped, `audit --follow` running meanwhile; then cmld stops (final checkpoint)."""
    tmp = tmp_path_factory.mktemp("audit")
    os.environ["PYTHONFAULTHANDLER"] = "1"
    pki = make_pki(tmp / "pki", "ec256")
    src = demo_guestos(tmp_path_factory.getbasetemp() / "guestos-cache")
    factory = DaemonFactory(tmp)
    try:
        scd, d = scd_and_cmld(factory, pki=pki, guestos=src, device_conf=AUDIT_CONF)
        follow = subprocess.Popen([str(BIN / "cml-control"), "-s", str(d.socket), "audit", "--follow"],
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        # a tampered config: refused by scd's signature check
        conf, sig, cert = signed_conf(tmp, pki, "app", container_conf("app", guestos_version=1))
        tampered = tmp / "tampered.conf"
        tampered.write_bytes(conf.read_bytes().replace(b'"app"', b'"apq"'))
        assert cli(d.socket, "create", str(tampered), str(sig), str(cert)).rc != 0
        # a token container: paired by the first PIN change, then a start with a wrong PIN
        tconf, tsig, tcert = signed_conf(tmp, pki, "tok", container_conf("tok", guestos_version=1).replace(
            "token_type: NONE", "token_type: SOFT"))
        assert cli(d.socket, "create", str(tconf), str(tsig), str(tcert)).rc == 0
        r = cli(d.socket, "change_pin", "tok", stdin=f"trustme\n{PIN}\n{PIN}\n")
        assert r.rc == 0, r.out + r.err
        r = cli(d.socket, "start", "tok", "--key=wrong-pin")
        assert "PASSWD_WRONG" in r.out + r.err
        # a container started and stopped
        assert cli(d.socket, "create", str(conf), str(sig), str(cert)).rc == 0
        assert cli(d.socket, "start", "app").rc == 0
        wait_state(d, "app", "RUNNING")
        assert cli(d.socket, "stop", "app").rc == 0
        wait_state(d, "app", "STOPPED")
        time.sleep(1.5)  # a checkpoint by time
        entries = journal_entries(d)
        app_uuid = next(str(e["subject_id"]) for e in of_type(entries, ".container-running"))
        app_entries = journal_entries(d, "app")
        follow.terminate()
        follow_out, _ = follow.communicate(timeout=10)
        d.proc.send_signal(signal.SIGTERM)
        try:
            d.proc.wait(15)
        except subprocess.TimeoutExpired:
            d.proc.send_signal(signal.SIGABRT)
            d.proc.wait(5)
            raise AssertionError((tmp / "cmld.stderr").read_text()[-8000:]) from None
        assert d.proc.returncode == 0
        scd.stop()
        shutil.copytree(d.base / "audit", tmp / "audit-copy")
        yield Audited(tmp / "audit-copy", d.base / "tokens" / "device.cert", entries, app_entries, app_uuid,
                      follow_out)
    finally:
        factory.stop_all()


def meta(e: dict[str, object]) -> dict[str, str]:
    m = e["meta"]
    assert isinstance(m, dict)
    return m


@pytest.mark.req("TSF Audit", "CR 2.8", "CR 6.1")
def test_event_classes_with_client_identity(audited: Audited) -> None:
    es = audited.entries
    (wrong_pin,) = of_type(es, "FUA.CMLD.TOKEN_MGMT.unlock-wrong-pin")
    assert meta(wrong_pin)["client_uid"] == "0" and int(meta(wrong_pin)["client_pid"]) > 1
    refused = of_type(es, "FSA.CMLD.CONTAINER_MGMT.verify-failed")
    assert refused and meta(refused[0])["result"] == "BAD_SIGNATURE" and meta(refused[0])["client_uid"] == "0"
    assert "CN=" in meta(refused[0])["signer"]
    # every command with its result: the refused create, the wrong PIN start, the good ones
    creates = of_type(es, ".create-container")
    assert [e["type"].split(".")[0] for e in creates] == ["FUA", "SUA", "SUA"]
    assert meta(creates[0])["result"] == "CONTAINER_CONFIG (failed)" and "signature" in meta(creates[0])["error"]
    (bad_start,) = [e for e in of_type(es, ".container-start") if e["type"].startswith("FUA")]
    assert meta(bad_start)["result"] == "CONTAINER_START_PASSWD_WRONG" and meta(bad_start)["client_uid"] == "0"
    # transitions of the container
    app = [e["type"] for e in audited.app_entries]
    for t in ("SSA.CMLD.CONTAINER_MGMT.container-start", "SSA.CMLD.CONTAINER_MGMT.container-running",
              "SSA.CMLD.CONTAINER_MGMT.shutting-down", "SSA.CMLD.CONTAINER_MGMT.container-stop"):
        assert t in app, app
    assert all(e["stored_for"] == audited.app_uuid for e in audited.app_entries)
    # a system action names no client (the start's client is not who stopped it later)
    stops = of_type(audited.app_entries, "SSA.CMLD.CONTAINER_MGMT.container-stop")
    assert stops and not any("client_uid" in meta(e) for e in stops)
    # the device's own events: cmld started; GuestOS verified at boot
    assert of_type(es, "SSA.CMLD.GENERIC.cmld-start")
    assert any(e["kind"] == "checkpoint" for e in es)


def test_follow_printed_the_events(audited: Audited) -> None:
    out = audited.follow_out
    assert "FUA.CMLD.TOKEN_MGMT.unlock-wrong-pin" in out and "SSA.CMLD.CONTAINER_MGMT.container-stop" in out
    assert "checkpoint: seq 1-" in out


def test_untouched_journal_verifies(audited: Audited) -> None:
    r = verify(audited.audit_dir, audited.cert, "--sealed")
    assert r.returncode == 0, r.stdout + r.stderr
    assert r.stdout.startswith("OK:") and "0 unsealed" in r.stdout
    j = json.loads(verify(audited.audit_dir, audited.cert, "--json").stdout)
    assert j["ok"] and j["checkpoints"] >= 2 and j["sealed_upto"] == j["last_seq"]


def _tamper(audited: Audited, tmp_path: Path, how: str) -> Path:
    d = tmp_path / "audit"
    shutil.copytree(audited.audit_dir, d)
    journal = d / "journal.log"
    lines = journal.read_text().splitlines()
    mid = next(i for i in range(len(lines) // 2, len(lines)) if '"kind":"record"' in lines[i])
    if how == "edited":
        lines[mid] = edit_record_time(lines[mid], -3600)
    elif how == "deleted":
        del lines[mid]
    elif how == "reordered":
        lines[mid], lines[mid + 1] = lines[mid + 1], lines[mid]
    elif how == "deleted-and-rechained":
        del lines[mid]
        lines = rechain(lines)
    elif how == "cut-at-end":
        lines = lines[: mid]
    elif how == "removed-at-start":
        lines = lines[2:]
    elif how == "garbage-line":
        lines.insert(mid, "{not json")
    if how == "truncated-mid-line":
        journal.write_bytes(journal.read_bytes()[:-40])
    else:
        journal.write_text("\n".join(lines) + "\n")
    return d


@pytest.mark.parametrize("how,expect", [
    ("edited", "hash does not match the entry: edited"),
    ("deleted", "does not chain to the entry before it"),
    ("reordered", "reordered or duplicated"),
    ("deleted-and-rechained", "checkpoint signature does not verify"),
    ("cut-at-end", "cut at the end"),
    ("truncated-mid-line", "incomplete last line: the journal was truncated"),
    ("removed-at-start", "does not start at seq 1"),
    ("garbage-line", "not a journal entry"),
])
@pytest.mark.req("CR 3.9")
def test_tampering_is_detected(audited: Audited, tmp_path: Path, how: str, expect: str) -> None:
    d = _tamper(audited, tmp_path, how)
    r = verify(d, audited.cert)
    assert r.returncode == 1, r.stdout
    assert expect in r.stdout, r.stdout


def _foreign_signer() -> tuple[object, bytes]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "attacker")])
    now = time.time()
    import datetime

    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(1).not_valid_before(datetime.datetime.fromtimestamp(now - 60, datetime.UTC))
            .not_valid_after(datetime.datetime.fromtimestamp(now + 3600, datetime.UTC))
            .sign(key, hashes.SHA256()))
    return key, cert.public_bytes(serialization.Encoding.PEM)


@pytest.mark.req("CR 3.9")
def test_resealed_with_another_key_is_detected(audited: Audited, tmp_path: Path) -> None:
    """An attacker edits a record and re-signs every checkpoint and the head with a key of their
    own (journald FSS CVE-2023-31439): the signatures match, but not the device's key."""
    d = tmp_path / "audit"
    shutil.copytree(audited.audit_dir, d)
    lines = (d / "journal.log").read_text().splitlines()
    i = next(i for i, line in enumerate(lines) if '"kind":"record"' in line)
    lines[i] = edit_record_time(lines[i], 60)
    key, cert = _foreign_signer()
    lines = rechain(lines, lambda data: (key.sign(data, ec.ECDSA(hashes.SHA256())), cert.decode()))  # type: ignore[attr-defined]
    (d / "journal.log").write_text("\n".join(lines) + "\n")
    (d / "head.json").write_text(lines[-1] + "\n")
    r = verify(d, audited.cert)
    assert r.returncode == 1 and "not the trusted device key: re-sealed" in r.stdout, r.stdout


def test_cut_with_rolled_back_head_needs_an_anchor(audited: Audited, tmp_path: Path) -> None:
    """Cut at the end AND the head file replaced by an older one: the device's files alone are
    consistent again; a checkpoint kept elsewhere (--anchor) still shows the cut."""
    d = tmp_path / "audit"
    shutil.copytree(audited.audit_dir, d)
    lines = (d / "journal.log").read_text().splitlines()
    anchor = tmp_path / "anchor.json"
    anchor.write_text(lines[-1] + "\n")
    checkpoints = [i for i, line in enumerate(lines) if '"kind":"checkpoint"' in line]
    keep = lines[: checkpoints[0] + 1]
    (d / "journal.log").write_text("\n".join(keep) + "\n")
    (d / "head.json").write_text(keep[-1] + "\n")
    assert verify(d, audited.cert).returncode == 0
    r = verify(d, audited.cert, "--anchor", str(anchor))
    assert r.returncode == 1 and "cut at the end" in r.stdout, r.stdout


def test_verify_refuses_bad_arguments(audited: Audited, tmp_path: Path) -> None:
    junk = tmp_path / "junk.pem"
    junk.write_text("not a certificate")
    assert verify(audited.audit_dir, junk).returncode == 2
    assert verify(tmp_path / "nothing", audited.cert).returncode == 1
    r = verify(audited.audit_dir, audited.cert, "--anchor", str(junk))
    assert r.returncode == 2 and "not a journal entry" in r.stderr
    assert verify(audited.audit_dir, audited.cert, "--bogus").returncode == 2
