"""Volume crypto on a host without device-mapper (the VM tier covers the devices themselves):
writable volumes stay plain there and say why, `--require-encryption` refuses instead, a verity
GuestOS falls back to the full hash, wipe and remove leave neither key nor headers behind,
DESTROY_SYSTEM clears the TPM through tpm2d (a real tpm2d on swtpm), and `cml-sysdata` refuses what
it must."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from cml_common.textconfig import to_text
from cml_common.tpm2d_client import Tpm2dError
from tests.conftest import BIN, DaemonFactory, cli, is_root
from tests.host import tpm2dlib
from tests.host.containers import REPO, container_conf, install_guestos, start, state, wait_state
from tests.host.scdlib import scd_and_cmld
from tests.host.swtpmlib import running_swtpm

pytestmark = [pytest.mark.host, pytest.mark.skipif(not is_root(), reason="needs root")]
PIN = "pin-4711x"
NO_DM = "device-mapper is not usable here (/dev/mapper/control: no device-mapper in this kernel)"
MIB = 1 << 20


def token_conf(name: str, guestos: str = "busybox") -> str:
    return container_conf(name, guestos).replace("token_type: NONE", "token_type: SOFT")


def create(d_socket: Path, tmp: Path, name: str, text: str) -> None:
    conf = tmp / f"{name}.conf"
    conf.write_text(text)
    r = cli(d_socket, "create", str(conf))
    assert r.rc == 0, r.out + r.err


def uuid_of(d_socket: Path, name: str) -> str:
    m = re.search(r'uuid: "([0-9a-f-]{36})"', cli(d_socket, "state", name).out)
    assert m
    return m.group(1)


def test_token_container_without_device_mapper_is_plain_and_says_why(cmld_factory: DaemonFactory,
                                                                     guestos_src: Path) -> None:
    _scd, d = scd_and_cmld(cmld_factory, guestos=guestos_src)
    create(d.socket, cmld_factory.tmp, "tok", token_conf("tok"))
    u = uuid_of(d.socket, "tok")
    assert "cryptfs_mode: NOT_IMPLEMENTED" in cli(d.socket, "state", "tok").out
    r = cli(d.socket, "change_pin", "tok", stdin=f"trustme\n{PIN}\n{PIN}\n")
    assert "CONTAINER_CHANGE_PIN_SUCCESSFUL" in r.out, r.out + r.err
    assert cli(d.socket, "start", "tok", f"--key={PIN}").rc == 0
    wait_state(d, "tok", "RUNNING")
    log = d.log_text()
    assert f"container tok: its writable volumes are NOT encrypted (cryptfs_mode NOT_IMPLEMENTED): {NO_DM}" in log
    assert "no dm-integrity/dm-crypt/dm-verity here" in log
    files = sorted(p.name for p in (d.base / "containers" / u).iterdir())
    assert "data.img" in files and "data.meta.img" not in files and "not-stacked" not in files, files
    assert "cryptfs_mode: NOT_IMPLEMENTED" in cli(d.socket, "state", "tok").out
    assert (d.base / "keys" / f"{u}.key").stat().st_size > 96  # the key exists, wrapped, for later
    assert cli(d.socket, "stop", "tok", f"--key={PIN}").rc == 0
    wait_state(d, "tok", "STOPPED", timeout=20)

    # wipe: the key file and the image headers are zeroed before they are unlinked
    evidence_key, evidence_img = d.base / "keys" / ".ev.key", d.base / "containers" / ".ev.img"
    os.link(d.base / "keys" / f"{u}.key", evidence_key)
    os.link(d.base / "containers" / u / "data.img", evidence_img)
    with evidence_img.open("rb") as f:
        assert f.read(MIB) != bytes(MIB)
    assert "CMD_OK" in cli(d.socket, "wipe", "tok").out
    assert evidence_key.read_bytes() == bytes(evidence_key.stat().st_size)
    with evidence_img.open("rb") as f:
        assert f.read(MIB) == bytes(MIB)
    assert not (d.base / "keys" / f"{u}.key").exists()
    assert sorted(p.name for p in (d.base / "containers" / u).iterdir()) == ["token_is_paired"]
    # remove: the same for what a removal unlinks
    assert cli(d.socket, "start", "tok", f"--key={PIN}").rc == 0
    wait_state(d, "tok", "RUNNING")
    assert cli(d.socket, "stop", "tok", f"--key={PIN}").rc == 0
    wait_state(d, "tok", "STOPPED", timeout=20)
    os.link(d.base / "containers" / u / "data.img", d.base / "containers" / ".ev2.img")
    assert "CMD_OK" in cli(d.socket, "remove", "tok").out
    with (d.base / "containers" / ".ev2.img").open("rb") as f:
        assert f.read(MIB) == bytes(MIB)
    assert not (d.base / "containers" / u).exists() and not (d.base / "tokens" / f"{u}.p12").exists()


def test_require_encryption_refuses_plain_volumes(cmld_factory: DaemonFactory, guestos_src: Path) -> None:
    base = cmld_factory.tmp / "cmld-base"
    install_guestos(guestos_src, base)
    d = cmld_factory.start("--require-encryption", base=base)
    create(d.socket, cmld_factory.tmp, "c1", container_conf("c1"))
    u = uuid_of(d.socket, "c1")
    r = start(d, "c1")
    assert r.rc != 0 and "CONTAINER_START_EINTERNAL" in r.out + r.err, r.out + r.err
    assert f"c1: writable volumes must be encrypted here (--require-encryption), but {NO_DM}" in r.out + r.err
    assert state(d, "c1") == "STOPPED"
    assert not (base / "containers" / u / "data.img").exists()
    # a container with nothing writable to protect still starts (a GuestOS with its root only)
    cfg = install_guestos(guestos_src, base, name="rootonly")
    del cfg.mounts[1:]
    (base / "operatingsystems" / "rootonly-1.conf").write_text(to_text(cfg))
    d.stop()
    d = cmld_factory.start("--require-encryption", base=base)
    create(d.socket, cmld_factory.tmp, "ro", container_conf("ro", "rootonly"))
    assert start(d, "ro").rc == 0, d.log_text()[-2000:]
    wait_state(d, "ro", "RUNNING")


def test_verity_guestos_is_hashed_in_full_without_device_mapper(cmld_factory: DaemonFactory, tmp_path: Path) -> None:
    src = tmp_path / "gos"
    subprocess.run([sys.executable, str(REPO / "scripts" / "build-guestos.py"), str(src), "--name", "busyverity",
                    "--verity"], check=True, capture_output=True, timeout=120)
    base = cmld_factory.tmp / "cmld-base"
    shutil.copytree(src, base / "operatingsystems")
    assert "image_verity_sha256" in (base / "operatingsystems" / "busyverity-1.conf").read_text()
    d = cmld_factory.start(base=base)
    create(d.socket, cmld_factory.tmp, "v", container_conf("v", "busyverity"))
    assert start(d, "v").rc == 0
    wait_state(d, "v", "RUNNING")
    assert (f"container v: root.img has a dm-verity root hash, but device-mapper is not usable here "
            f"({NO_DM.split('(')[1]}: hashing it in full instead") in d.log_text()
    assert cli(d.socket, "stop", "v").rc == 0
    wait_state(d, "v", "STOPPED", timeout=20)
    img = base / "operatingsystems" / "busyverity-1" / "root.img"
    with img.open("r+b") as f:
        f.seek(4096 * 100)
        b = f.read(1)
        f.seek(4096 * 100)
        f.write(bytes([b[0] ^ 0xFF]))
    r = start(d, "v")
    assert r.rc != 0 and "corrupted or tampered with" in r.out + r.err, r.out + r.err


def test_destroy_system_clears_the_tpm_through_tpm2d(cmld_factory: DaemonFactory, tmp_path: Path) -> None:
    with running_swtpm() as tpm:
        t = tpm2dlib.launch(cmld_factory, tpm)
        key = ec.generate_private_key(ec.SECP256R1())
        pem = key.public_key().public_bytes(serialization.Encoding.PEM,
                                            serialization.PublicFormat.SubjectPublicKeyInfo)
        with t.client() as c:
            recovery = c.seal_create("sysdata-test", pem)
            assert len(c.unseal_recovery("sysdata-test", recovery)) == 32
        d = cmld_factory.start("--tpm2d-socket", str(t.socket))
        r = cli(d.socket, "destroy_system")
        assert r.out == "code: RESPONSE\nresponse: CMD_OK\n", r.out + r.err
        t0 = time.monotonic()
        while "DESTROY_SYSTEM: no reboot" not in d.log_text() and time.monotonic() - t0 < 30:
            time.sleep(0.2)
        log = d.log_text()
        assert "DESTROY_SYSTEM: the TPM is cleared" in log and "DESTROY_SYSTEM: no reboot (hosted mode)" in log, log
        with t.client() as c, pytest.raises(Tpm2dError, match="no sealed object 'sysdata-test'"):
            c.unseal_recovery("sysdata-test", recovery)  # gone with the storage seed: no recovery either
        assert d.alive()


def test_destroy_system_without_tpm2d_destroys_nothing_and_stays_up(cmld_factory: DaemonFactory) -> None:
    d = cmld_factory.start()
    assert cli(d.socket, "destroy_system").out == "code: RESPONSE\nresponse: CMD_OK\n"
    t0 = time.monotonic()
    while "nothing was destroyed" not in d.log_text() and time.monotonic() - t0 < 30:
        time.sleep(0.2)
    log = d.log_text()
    assert "clearing the TPM through tpm2d failed" in log and "nothing was destroyed" in log, log
    assert d.alive() and cli(d.socket, "list").rc == 0


def sysdata(base: Path, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(BIN / "cml-sysdata"), "--base-dir", str(base), "--tpm2d-socket", str(base / "no.sock"),
                           *args], input=stdin, capture_output=True, text=True, timeout=60, check=False)


def test_cml_sysdata_refuses_what_it_must(tmp_path: Path) -> None:
    base = tmp_path / "base"
    base.mkdir()
    r = sysdata(base, "open")
    assert r.returncode == 0 and "no system data volume is set up" in r.stdout
    assert sysdata(base, "status").stdout.strip() == "configured: no"
    (base / "containers").mkdir()
    (base / "containers" / "x.conf").write_text("x")
    r = sysdata(base, "setup", "--device", str(tmp_path), "--authority", str(tmp_path / "a.pem"),
                "--policy", str(tmp_path / "p"))
    assert r.returncode == 1 and "not empty" in r.stderr and str(base / "containers") in r.stderr, r.stderr
    r = sysdata(base, "setup", "--device", "/dev/nonexistent", "--authority", "a", "--policy", "p")
    assert r.returncode == 1 and "does not exist" in r.stderr
    (base / "sysdata.conf").write_text('{"device": "/dev/vdb", "luks_uuid": "x", "seal_name": "y"}')
    r = sysdata(base, "open")
    assert r.returncode == 1 and "not valid" in r.stderr, r.stderr
    (base / "sysdata.conf").write_text(
        '{"device": "/dev/vdb", "luks_uuid": "2dac8317-697d-4380-bdc4-81e8fb70eac3", "seal_name": "sysdata-1"}')
    r = sysdata(base, "open")
    assert r.returncode == 1 and "tpm2d" in r.stderr, r.stderr  # no tpm2d: no key, said so
    r = sysdata(base, "open", "--recovery-key-file", "-", stdin="\n")
    assert r.returncode == 1 and "empty" in r.stderr
    assert sysdata(base, "bogus").returncode == 2
