"""tpm2d on a real (software) TPM: start-up keys, every ControllerToTpm command over the real
socket, hostile input, and the `tpm2_control` CLI. Each module has its own swtpm; tests that
clear the TPM or change PCR 7 get a fresh one."""

from __future__ import annotations

import hashlib
import re
import socket
import struct
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa

from cml_common import framing
from cml_common.messages.tpm2d_pb2 import ControllerToTpm, SignedPcrPolicy, TpmToController
from cml_common.tpm2d_client import Tpm2dError
from tests.conftest import BIN, DaemonFactory
from tests.host import tpm2dlib
from tests.host.swtpmlib import Swtpm, running_swtpm

pytestmark = pytest.mark.host
C = ControllerToTpm
R = TpmToController


@pytest.fixture(scope="module")
def swtpm() -> Iterator[Swtpm]:
    with running_swtpm() as t:
        yield t


@pytest.fixture
def fresh_swtpm() -> Iterator[Swtpm]:
    with running_swtpm() as t:
        yield t


@pytest.fixture
def tpm2d(cmld_factory: DaemonFactory, swtpm: Swtpm) -> tpm2dlib.Tpm2d:
    return tpm2dlib.launch(cmld_factory, swtpm)


def raw(t: tpm2dlib.Tpm2d, body: bytes) -> tuple[bytes | None, socket.socket]:
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(10)
    s.connect(str(t.socket))
    s.sendall(body)
    return framing.recv_frame(s), s


def send(t: tpm2dlib.Tpm2d, req: ControllerToTpm) -> TpmToController:
    with t.client() as c:
        reply = c.send(req)
    assert reply is not None
    assert reply.HasField("ml_entry")  # required, always present
    return reply


def pcr(swtpm: Swtpm, n: int) -> bytes:
    out = swtpm.tool("tpm2_pcrread", f"sha256:{n}").stdout
    m = re.search(r"0x([0-9A-Fa-f]{64})", out)
    assert m, out
    return bytes.fromhex(m.group(1))


def tpm2_control(t: tpm2dlib.Tpm2d, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(BIN / "tpm2_control"), "-s", str(t.socket), *args], capture_output=True, text=True,
                          timeout=60, check=False)


# --------------------------------------------------------------------------- start-up


def test_startup_creates_the_original_key_files_and_a_restart_reuses_them(
        cmld_factory: DaemonFactory, swtpm: Swtpm) -> None:
    t = tpm2dlib.launch(cmld_factory, swtpm)
    tokens = t.daemon.base / "tpm2d" / "tokens"
    names = {p.name for p in tokens.iterdir()}
    assert {"attestation_priv.bin", "attestation_pub.bin", "attestation_tss.pem"} <= names, names
    assert (tokens / "attestation_tss.pem").read_text().startswith("-----BEGIN TSS2 PRIVATE KEY-----")
    assert (tokens / "attestation_priv.bin").stat().st_mode & 0o077 == 0
    with t.client() as c:
        pub1 = c.device_key_public()
    # The storage primary is persisted at 0x81000000, as the original's.
    assert "0x81000000" in swtpm.tool("tpm2_getcap", "handles-persistent").stdout
    assert t.daemon.stop() == 0
    t2 = tpm2dlib.launch(cmld_factory, swtpm, base=t.daemon.base, name="tpm2d-again")
    with t2.client() as c:
        assert c.device_key_public() == pub1
    key = serialization.load_pem_public_key(pub1)
    assert isinstance(key, rsa.RSAPublicKey) and key.key_size == 2048


def test_a_corrupt_key_file_stops_tpm2d_with_the_reason_and_is_left_alone(
        cmld_factory: DaemonFactory, swtpm: Swtpm, tmp_path: Path) -> None:
    base = tmp_path / "bad-base"
    tokens = base / "tpm2d" / "tokens"
    tokens.mkdir(parents=True)
    (tokens / "attestation_priv.bin").write_bytes(b"\x00\x05junk")
    (tokens / "attestation_pub.bin").write_bytes(b"\x00\x01")
    with pytest.raises(RuntimeError, match="do not parse"):
        tpm2dlib.launch(cmld_factory, swtpm, base=base, name="tpm2d-bad")
    assert (tokens / "attestation_priv.bin").read_bytes() == b"\x00\x05junk"


def test_an_unreachable_tpm_stops_tpm2d_with_the_tcti_in_the_message(cmld_factory: DaemonFactory) -> None:
    port = tpm2dlib.free_port()
    with pytest.raises(RuntimeError, match=f"swtpm:host=127.0.0.1,port={port}"):
        cmld_factory.launch("tpm2d", "tpm2d-none", "--tcti", f"swtpm:host=127.0.0.1,port={port}",
                            "--attest-listen", "127.0.0.1:0")


# --------------------------------------------------------------------------- commands


def test_random_returns_2n_hex_chars_and_bad_sizes_get_a_reason(tpm2d: tpm2dlib.Tpm2d) -> None:
    r = send(tpm2d, C(code=C.RANDOM_REQ, rand_size=100))
    assert r.code == R.RANDOM_RESPONSE and re.fullmatch(r"[0-9a-f]{200}", r.rand_data)
    assert send(tpm2d, C(code=C.RANDOM_REQ, rand_size=100)).rand_data != r.rand_data
    # 4097: above the bound that keeps one request from holding the TPM worker (found by fuzzing)
    assert len(send(tpm2d, C(code=C.RANDOM_REQ, rand_size=4096)).rand_data) == 8192
    for size in (0, -1, 4097, 2**31 - 1):
        bad = send(tpm2d, C(code=C.RANDOM_REQ, rand_size=size))
        assert bad.code == R.GENERIC_RESPONSE and bad.response == R.CMD_FAILED
        assert "rand_size" in bad.error_message
    assert tpm2d.daemon.alive()


@pytest.mark.req("COM 04")
def test_ml_append_extends_pcr11_once_per_image_and_survives_a_restart(
        cmld_factory: DaemonFactory, fresh_swtpm: Swtpm) -> None:
    t = tpm2dlib.launch(cmld_factory, fresh_swtpm)
    images = [("/var/lib/cml/operatingsystems/a-1/root.img", hashlib.sha256(b"a").digest()),
              ("/var/lib/cml/operatingsystems/b-1/root.img", hashlib.sha256(b"b").digest())]
    with t.client() as c:
        for name, digest in images:
            c.ml_append(name, digest)
        c.ml_append(*images[0])  # already measured: not extended again
        entries = c.ml_list()
    expect = bytes(32)
    for i, (name, digest) in enumerate(images):
        expect = hashlib.sha256(expect + digest).digest()
        assert entries[i].filename == name and entries[i].data_hash == digest
        assert entries[i].template_hash == expect and entries[i].pcr_index == 11
        assert entries[i].data_hash_alg == "sha256" and entries[i].template_hash_alg == "sha256"
    assert len(entries) == 2
    assert pcr(fresh_swtpm, 11) == expect  # tpm2-tools, an independent reader
    # A restarted tpm2d still has the list that explains PCR 11 (the original loses it).
    assert t.daemon.stop() == 0
    t2 = tpm2dlib.launch(cmld_factory, fresh_swtpm, base=t.daemon.base)
    with t2.client() as c:
        assert [e.filename for e in c.ml_list()] == [n for n, _ in images]


def test_ml_append_refuses_bad_input_with_a_reason(tpm2d: tpm2dlib.Tpm2d, swtpm: Swtpm) -> None:
    before = pcr(swtpm, 11)
    cases = [
        (C(code=C.ML_APPEND, ml_filename="x", ml_datahash=b"\x01" * 31, ml_hashalg=32), "needs 32"),  # type: ignore[arg-type]
        (C(code=C.ML_APPEND, ml_filename="", ml_datahash=b"\x01" * 32, ml_hashalg=32), "without ml_filename"),  # type: ignore[arg-type]
        (C(code=C.ML_APPEND, ml_filename="x" * 5000, ml_datahash=b"\x01" * 32, ml_hashalg=32), "4096"),  # type: ignore[arg-type]
    ]
    for req, why in cases:
        r = send(tpm2d, req)
        assert r.response == R.CMD_FAILED and why in r.error_message, r
    assert pcr(swtpm, 11) == before


def test_hostile_frames_get_a_reply_or_a_disconnect_and_tpm2d_keeps_serving(tpm2d: tpm2dlib.Tpm2d) -> None:
    def reply_of(body: bytes) -> TpmToController:
        frame, s = raw(tpm2d, framing.encode_frame(body))
        s.close()
        assert frame is not None
        return framing.parse(TpmToController, frame)

    # Not protobuf; no code (an empty frame); an unknown code; our codes with missing fields.
    for body, why in [(b"\xff\xff\xff", "not a valid"), (b"", "required field"),
                      (bytes.fromhex("084d"), "required field"),
                      (C(code=C.UNSEAL, seal_name="../../etc").SerializeToString(), "must match"),
                      (C(code=C.DEVICE_KEY_SIGN).SerializeToString(), "without sign_data")]:
        r = reply_of(body)
        assert r.response == R.CMD_FAILED and why in r.error_message, (body, r)
    # Oversized announced length and a truncated frame: disconnected.
    for data in (struct.pack(">I", 64 << 20), struct.pack(">I", 100) + b"abc"):
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.settimeout(15)
        s.connect(str(tpm2d.socket))
        s.sendall(data)
        s.shutdown(socket.SHUT_WR)
        assert s.recv(100) == b""
        s.close()
    # Several requests on one connection, and the daemon still answers.
    with tpm2d.client() as c:
        assert len(c.random(8)) == 8 and len(c.random(8)) == 8
    assert tpm2d.daemon.alive()


@pytest.mark.req("CR 1.5 (1)", "CR 1.9 (1)")
def test_device_key_signs_with_the_tpm_and_refuses_tpm_generated_looking_data(tpm2d: tpm2dlib.Tpm2d) -> None:
    with tpm2d.client() as c:
        pub = serialization.load_pem_public_key(c.device_key_public())
        assert isinstance(pub, rsa.RSAPublicKey)
        data = b"certification request info" * 100  # several TPM hash-sequence chunks
        sig = c.device_key_sign(data)
        pub.verify(sig, data, padding.PKCS1v15(), hashes.SHA256())
        # A restricted key: the TPM will not sign what looks like a TPM-generated structure.
        with pytest.raises(Tpm2dError, match="TPM2_Sign|ticket"):
            c.device_key_sign(b"\xffTCG" + b"\x80\x18forged quote")
        with pytest.raises(Tpm2dError, match="at most"):
            c.device_key_sign(b"x" * (64 * 1024 + 1))


def test_exit_stops_tpm2d_without_a_reply(tpm2d: tpm2dlib.Tpm2d) -> None:
    r = tpm2_control(tpm2d, "exit")
    assert r.returncode == 0 and "code: EXIT" in r.stdout
    assert tpm2d.daemon.proc.wait(15) == 0
    assert not tpm2d.socket.exists()


def test_change_owner_password_and_clear(cmld_factory: DaemonFactory, fresh_swtpm: Swtpm) -> None:
    t = tpm2dlib.launch(cmld_factory, fresh_swtpm)
    r = tpm2_control(t, "change_owner", "", "ownerpw")
    assert r.returncode == 0 and "response: CMD_OK" in r.stdout, r.stdout + r.stderr
    r = tpm2_control(t, "change_owner", "wrong", "x")
    assert r.returncode == 1 and "response: CMD_FAILED" in r.stdout and "HierarchyChangeAuth" in r.stderr
    assert tpm2_control(t, "change_owner", "ownerpw", "").returncode == 0
    r = tpm2_control(t, "clear")
    assert r.returncode == 0 and "response: CMD_OK" in r.stdout, r.stdout + r.stderr
    # A wrong lockout password fails (and, as on any TPM, blocks lockout auth for a while).
    bad = tpm2_control(t, "clear", "not-the-lockout-password")
    assert bad.returncode == 1 and "TPM2_Clear" in bad.stderr
    # The storage primary (and with it the attestation key) is gone, and so are its files.
    assert "0x81000000" not in fresh_swtpm.tool("tpm2_getcap", "handles-persistent").stdout
    with t.client() as c, pytest.raises(Tpm2dError, match="TPM was cleared"):
        c.device_key_sign(b"data")
    tokens = t.daemon.base / "tpm2d" / "tokens"
    assert not list(tokens.glob("attestation_*"))
    # The next start provisions a fresh key.
    assert t.daemon.stop() == 0
    t2 = tpm2dlib.launch(cmld_factory, fresh_swtpm, base=t.daemon.base, name="tpm2d-after-clear")
    with t2.client() as c:
        assert c.device_key_public()


# --------------------------------------------------------------------------- FDE key


@pytest.mark.req("TSF System Data Storage", "CR 4.1", "CR 4.2")
def test_fde_key_in_nv_under_pcr7_lock_and_reset(cmld_factory: DaemonFactory, fresh_swtpm: Swtpm,
                                                tmp_path: Path) -> None:
    t = tpm2dlib.launch(cmld_factory, fresh_swtpm)
    disk = tmp_path / "disk.img"
    disk.write_bytes(bytes(1 << 20))
    # No device-mapper on this host: the TPM part succeeds (key made, written, read back under
    # the PCR-7 policy), the mapping fails with the reason.
    r = tpm2_control(t, "dmcrypt_setup", str(disk), "nvpw")
    assert "fde_response: FDE_NO_DEVICE" in r.stdout and "FDE key ready in NV 0x1000000" in r.stdout, r.stdout
    pub = fresh_swtpm.tool("tpm2_nvreadpublic", "0x01000000").stdout
    assert "size: 64" in pub and "policyread" in pub and "authwrite" in pub and "read_stclear" in pub, pub
    from tpm2d import policy_math

    want = policy_math.policy_pcr([7], policy_math.pcr_digest([pcr(fresh_swtpm, 7)])).hex()
    assert want in pub.lower().replace(" ", ""), pub
    # A second setup reads the same key (no new index), still only the mapping fails.
    assert "FDE key ready" in tpm2_control(t, "dmcrypt_setup", str(disk)).stdout
    assert "FDE_NO_DEVICE" in tpm2_control(t, "dmcrypt_setup", str(tmp_path / "missing")).stdout
    # Lock: reads refused until the next TPM reset.
    r = tpm2_control(t, "dmcrypt_lock", "nvpw")
    assert r.returncode == 0 and "FDE_KEY_ACCESS_LOCKED" in r.stdout, r.stdout + r.stderr
    assert "fde_response: FDE_KEY_ACCESS_LOCKED" in tpm2_control(t, "dmcrypt_setup", str(disk)).stdout
    # Reset (owner password): the index is gone, the next setup makes a new key.
    r = tpm2_control(t, "dmcrypt_reset", "")
    assert r.returncode == 0 and "fde_response: FDE_RESET" in r.stdout, r.stdout + r.stderr
    assert fresh_swtpm.tool("tpm2_nvreadpublic", "0x01000000", check=False).returncode != 0
    assert "FDE key ready" in tpm2_control(t, "dmcrypt_setup", str(disk)).stdout
    # Another secure-boot state (PCR 7 extended): the key is not released.
    tpm2dlib.extend(fresh_swtpm, 7, hashlib.sha256(b"secure boot off").digest())
    r = tpm2_control(t, "dmcrypt_setup", str(disk))
    assert r.returncode == 1 and "fde_response: FDE_AUTH_FAILED" in r.stdout and "PCR 7" in r.stdout, r.stdout


# --------------------------------------------------------------------------- sealing


def _authority(tmp_path: Path, kind: str = "rsa") -> tuple[Path, Path]:
    key = rsa.generate_private_key(65537, 2048) if kind == "rsa" else ec.generate_private_key(ec.SECP256R1())
    k, p = tmp_path / f"authority-{kind}.key", tmp_path / f"authority-{kind}.pem"
    k.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                    serialization.NoEncryption()))
    p.write_bytes(key.public_key().public_bytes(serialization.Encoding.PEM,
                                                serialization.PublicFormat.SubjectPublicKeyInfo))
    return k, p


def _sign(t: tpm2dlib.Tpm2d, key: Path, out: Path, pcrs: dict[int, bytes]) -> Path:
    r = tpm2_control(t, "seal_policy_sign", "--key", str(key), *[a for n, v in pcrs.items()
                                                                 for a in ("--pcr", f"{n}={v.hex()}")],
                     "-o", str(out))
    assert r.returncode == 0, r.stderr
    return out


@pytest.mark.parametrize("kind", ["rsa", "ec"])
def test_sealing_to_a_signed_pcr_policy_survives_an_update_and_has_a_recovery_key(
        cmld_factory: DaemonFactory, fresh_swtpm: Swtpm, tmp_path: Path, kind: str) -> None:
    t = tpm2dlib.launch(cmld_factory, fresh_swtpm)
    key, pem = _authority(tmp_path, kind)
    pol1 = _sign(t, key, tmp_path / "p1.policy", {7: pcr(fresh_swtpm, 7), 11: pcr(fresh_swtpm, 11)})
    r = tpm2_control(t, "seal_create", "disk", str(pem), str(pol1))
    assert r.returncode == 0, r.stdout + r.stderr
    recovery = re.search(r'recovery_key: "([0-9a-f-]+)"', r.stdout)
    assert recovery, r.stdout
    assert not any(recovery.group(1) in p.read_bytes().decode(errors="replace")
                   for p in (t.daemon.base / "tpm2d" / "tokens").iterdir())  # shown once, never stored
    with t.client() as c:
        secret = c.unseal("disk")
        assert len(secret) == 32
        # An update changes a PCR: the old signed policy no longer matches.
        tpm2dlib.extend(fresh_swtpm, 11, hashlib.sha256(b"new GuestOS").digest())
        with pytest.raises(Tpm2dError, match="do not have the values the signed policy expects"):
            c.unseal("disk")
        # The recovery key works whatever the PCRs; a wrong one does not.
        assert c.unseal_recovery("disk", recovery.group(1).upper()) == secret
        with pytest.raises(Tpm2dError, match="TPM2_Unseal"):
            c.unseal_recovery("disk", "0000-1111-2222-3333")
    # A policy for the new values signed by another key is refused; by the authority, it works.
    (tmp_path / "other").mkdir()
    other_key, _ = _authority(tmp_path / "other", kind)
    new_values = {7: pcr(fresh_swtpm, 7), 11: pcr(fresh_swtpm, 11)}
    forged = _sign(t, other_key, tmp_path / "forged.policy", new_values)
    r = tpm2_control(t, "seal_policy_update", "disk", str(forged))
    assert r.returncode == 1 and "not signed by this object's seal authority" in r.stderr, r.stderr
    good = _sign(t, key, tmp_path / "p2.policy", new_values)
    assert tpm2_control(t, "seal_policy_update", "disk", str(good)).returncode == 0
    with t.client() as c:
        assert c.unseal("disk") == secret


def test_sealing_refuses_malformed_input(tpm2d: tpm2dlib.Tpm2d, tmp_path: Path) -> None:
    _, pem = _authority(tmp_path)
    tampered = SignedPcrPolicy(pcrs=[7], pcr_digest=bytes(32), approved_policy=bytes(32), signature=b"x")
    cases = [
        (C(code=C.SEAL_CREATE, seal_name="Bad Name", seal_authority=pem.read_bytes()), "must match"),
        (C(code=C.SEAL_CREATE, seal_name="a", seal_authority=b"not a key"), "not a PEM public key"),
        (C(code=C.SEAL_CREATE, seal_name="b", seal_authority=pem.read_bytes(), seal_policy=b"\xff" * 10),
         "does not parse"),
        (C(code=C.SEAL_CREATE, seal_name="c", seal_authority=pem.read_bytes(),
           seal_policy=tampered.SerializeToString()), "is not the PolicyPCR digest"),
        (C(code=C.SEAL_CREATE, seal_name="d", seal_authority=pem.read_bytes(), seal_policy=b"\x0a" * 20000),
         "larger than 16 KiB"),
        (C(code=C.UNSEAL, seal_name="nothing"), "no sealed object"),
        (C(code=C.UNSEAL_RECOVERY, seal_name="nothing"), "needs the recovery key"),
    ]
    for req, why in cases:
        r = send(tpm2d, req)
        assert r.response == R.CMD_FAILED and why in r.error_message, (req, r.error_message)
    # Nothing half-created.
    assert not list((tpm2d.daemon.base / "tpm2d" / "tokens").glob("seal_*"))


# --------------------------------------------------------------------------- CLI


def test_tpm2_control_usage_and_missing_socket(tmp_path: Path, tpm2d: tpm2dlib.Tpm2d) -> None:
    r = subprocess.run([str(BIN / "tpm2_control"), "-s", str(tmp_path / "nope"), "getrandom", "4"],
                       capture_output=True, text=True, check=False)
    assert r.returncode == 254 and "does not exist" in r.stderr
    r = tpm2_control(tpm2d, "getrandom", "eight")
    assert r.returncode == 2 and "getrandom <size>" in r.stderr
    r = tpm2_control(tpm2d, "frobnicate")
    assert r.returncode == 2 and "unknown command" in r.stderr
    r = tpm2_control(tpm2d, "getrandom", "16")
    assert r.returncode == 0 and "code: RANDOM_REQ" in r.stdout and re.search(r'rand_data: "[0-9a-f]{32}"', r.stdout)
    r = subprocess.run([str(BIN / "cml-tpm2-control"), "-s", str(tpm2d.socket), "dmcrypt_setup", "-l", "32",
                        str(tmp_path / "none")], capture_output=True, text=True, check=False)
    assert "dmcrypt_key_type: XTS_AES128" in r.stdout and "FDE_NO_DEVICE" in r.stdout
