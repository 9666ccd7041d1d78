"""Remote attestation end to end on the host: tpm2d on a swtpm whose PCRs hold a (synthetic but
really extended) measured boot, IMA list and GuestOS measurements; `cml-rattestation` over TCP
9505 and over gRPC with mutual TLS; `tpm2_checkquote` (tpm2-tools) as an independent verifier;
and the negative cases, each failing with its own message."""

from __future__ import annotations

import hashlib
import json
import socket
import struct
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from cml_common import framing
from cml_common.messages.attestation_pb2 import ADVANCED, RemoteToTpm2d, Tpm2dToRemote
from tests.conftest import BIN, DaemonFactory
from tests.host import tpm2dlib
from tests.host.scdlib import make_pki, sign
from tests.host.swtpmlib import Swtpm, running_swtpm

pytestmark = pytest.mark.host
IMA_FILES = [("/usr/bin/cmld", b"cmld binary"), ("/usr/lib/modules/x/dm-crypt.ko", b"module")]


@pytest.fixture(scope="module")
def swtpm() -> Iterator[Swtpm]:
    with running_swtpm() as t:
        yield t


@pytest.fixture(scope="module")
def world(swtpm: Swtpm, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Boot measurements in PCRs 0-7 with their event log, and an IMA list in PCR 10."""
    d = tmp_path_factory.mktemp("attest-world")
    (d / "eventlog.bin").write_bytes(tpm2dlib.measure_boot(swtpm))
    (d / "ima.bin").write_bytes(tpm2dlib.measure_ima(swtpm, IMA_FILES))
    return {"dir": d, "eventlog": d / "eventlog.bin", "ima": d / "ima.bin"}


@pytest.fixture(scope="module")
def ca() -> tpm2dlib.Ca:
    return tpm2dlib.make_ca("CML test device CA")


@pytest.fixture
def device(cmld_factory: DaemonFactory, swtpm: Swtpm, world: dict[str, Path], ca: tpm2dlib.Ca) -> tpm2dlib.Tpm2d:
    # One measurement-list state per swtpm, as one per boot on a device.
    t = tpm2dlib.launch(cmld_factory, swtpm, "--event-log", str(world["eventlog"]), "--ima-log", str(world["ima"]),
                        ml_state=world["dir"] / "ml.json")
    tpm2dlib.certify_device(t, ca)
    return t


def config(tmp_path: Path, ca: tpm2dlib.Ca, **extra: object) -> Path:
    (tmp_path / "ca.pem").write_bytes(ca.pem())
    fields: dict[str, object] = {"ca_cert": "ca.pem", **extra}
    return tpm2dlib.verifier_config(tmp_path / "rattestation.conf", **fields)


def fetch(t: tpm2dlib.Tpm2d, req: RemoteToTpm2d) -> Tpm2dToRemote:
    with socket.create_connection(("127.0.0.1", t.port), timeout=30) as s:
        framing.send_frame(s, framing.serialize(req))
        body = framing.recv_frame(s)
    assert body is not None
    return framing.parse(Tpm2dToRemote, body)


# ---------------------------------------------------------------------- success


@pytest.mark.req("COM 04", "CR 3.4 (1)")
def test_full_attestation_passes_every_check(device: tpm2dlib.Tpm2d, ca: tpm2dlib.Ca, tmp_path: Path) -> None:
    with device.client() as c:
        c.ml_append("/var/lib/cml/operatingsystems/busybox-1/root.img", hashlib.sha256(b"root").digest())
    cfg = config(tmp_path, ca)
    r = tpm2dlib.verify(device, cfg, "--make-policy", str(tmp_path / "boot.policy"), "--state-dir",
                        str(tmp_path / "state"))
    assert r.returncode == 0, r.stdout + r.stderr
    lines = tpm2dlib.check_lines(r.stdout)
    for name in ("nonce", "certificate", "quote signature", "ak binding", "quote structure", "pcr digest",
                 "freshness", "event log", "ima", "containers"):
        assert lines[name].startswith("PASS"), lines
    assert "restricted, TPM-resident" in lines["ak binding"]
    assert "2 IMA entries (ima-ng) replay to PCR 10" in lines["ima"]
    assert "REMOTE ATTESTATION: SUCCESSFUL" in r.stdout
    # The policy written from this boot now holds, in a second run (JSON output this time).
    pol = json.loads((tmp_path / "boot.policy").read_text())
    assert pol["secure_boot"] is False and len(pol["boot_applications"]) == 1
    cfg2 = config(tmp_path, ca, event_log_policy="boot.policy")
    r = tpm2dlib.verify(device, cfg2, "--json", "--state-dir", str(tmp_path / "state"))
    assert r.returncode == 0, r.stdout
    res = json.loads(r.stdout)
    assert res["ok"] and {c["name"]: c["status"] for c in res["checks"]}["event log policy"] == "PASS"


def test_the_quote_verifies_with_tpm2_checkquote(device: tpm2dlib.Tpm2d, swtpm: Swtpm, tmp_path: Path) -> None:
    """tpm2-tools as an independent verifier of our quote, signature and nonce."""
    nonce = bytes(range(20))
    resp = fetch(device, RemoteToTpm2d(code=RemoteToTpm2d.ATTESTATION_REQ, qualifyingData=nonce))
    assert not resp.error_message
    with device.client() as c:
        (tmp_path / "ak.pem").write_bytes(c.device_key_public())
    (tmp_path / "msg").write_bytes(resp.quoted)
    (tmp_path / "sig").write_bytes(resp.signature)
    base = ["tpm2_checkquote", "-u", str(tmp_path / "ak.pem"), "-m", str(tmp_path / "msg"), "-s",
            str(tmp_path / "sig"), "-g", "sha256"]
    good = subprocess.run([*base, "-q", nonce.hex()], capture_output=True, text=True, check=False)
    assert good.returncode == 0, good.stderr
    bad = subprocess.run([*base, "-q", bytes(20).hex()], capture_output=True, text=True, check=False)
    assert bad.returncode != 0
    assert [p.number for p in resp.pcr_values] == list(range(12))


def test_advanced_selection_and_the_original_pcr_value_check(device: tpm2dlib.Tpm2d, swtpm: Swtpm,
                                                           ca: tpm2dlib.Ca, tmp_path: Path) -> None:
    resp = fetch(device, RemoteToTpm2d(code=RemoteToTpm2d.ATTESTATION_REQ, atype=ADVANCED, pcrs=(1 << 7) | (1 << 10)))
    assert [p.number for p in resp.pcr_values] == [7, 10]
    # Golden values as the original's config lists them ("0X" + hex), positionally.
    values = {p.number: p.value.hex().upper() for p in fetch(device, RemoteToTpm2d(
        code=RemoteToTpm2d.ATTESTATION_REQ)).pcr_values}
    cfg = tmp_path / "golden.conf"
    (tmp_path / "ca.pem").write_bytes(ca.pem())
    text = 'name: "rattestation"\nkmod_sign_cert: "yocto.pem"\nca_cert: "ca.pem"\natype: BASIC\n'
    text += "".join(f'pcr_values {{\n    number: {n}\n    value: "0X{v}"\n}}\n' for n, v in values.items())
    cfg.write_text(text)
    r = tpm2dlib.verify(device, cfg)
    assert r.returncode == 0, r.stdout
    assert tpm2dlib.check_lines(r.stdout)["pcr values"].startswith("PASS 12 PCRs")
    # One wrong golden value (PCR 7): the original's message, and exit 1.
    cfg.write_text(text.replace(f"0X{values[7]}", "0X" + "00" * 32))
    r = tpm2dlib.verify(device, cfg)
    assert r.returncode == 1 and "PCR_7 VERIFICATION FAILED" in r.stdout and "REMOTE ATTESTATION: FAILED" in r.stdout
    # A dropped entry: the original's count message.
    cfg.write_text(text.split("pcr_values {\n    number: 11")[0])
    r = tpm2dlib.verify(device, cfg)
    assert "Number of configured PCR values (11) does not match responded PCR values (12)" in r.stdout


def test_the_original_sample_config_shape_is_accepted(device: tpm2dlib.Tpm2d, tmp_path: Path) -> None:
    """rattestation.conf as GyroidOS ships it (zero golden values, kmod_sign_cert, no CA): it
    parses, the original's checks run, and what cannot pass says why."""
    text = 'name: "rattestation"\nkmod_sign_cert: "yocto.pem"\n\natype: BASIC\n\n' + "".join(
        f'pcr_values {{\n    number: {n}\n    value: "0X{"0" * 64}"\n}}\n' for n in range(12))
    cfg = tmp_path / "rattestation.conf"
    cfg.write_text(text)
    r = tpm2dlib.verify(device, cfg)
    lines = tpm2dlib.check_lines(r.stdout)
    assert r.returncode == 1
    assert "PCR_0 VERIFICATION FAILED" in lines["pcr values"]
    assert "no ca_cert in the config" in lines["certificate"]
    assert lines["nonce"].startswith("PASS") and lines["quote signature"].startswith("PASS")


# ---------------------------------------------------------------------- negative cases


class Proxy:
    """A man in the middle on loopback: forwards to tpm2d, optionally rewriting the request's
    nonce, or answering with a response recorded earlier."""

    def __init__(self, target: int, mode: str) -> None:
        self.target, self.mode = target, mode
        self.recorded: bytes | None = None
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(4)
        self.port = self.sock.getsockname()[1]
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while True:
            try:
                c, _ = self.sock.accept()
            except OSError:
                return
            with c, socket.create_connection(("127.0.0.1", self.target)) as up:
                body = framing.recv_frame(c)
                assert body is not None
                req = framing.parse(RemoteToTpm2d, body)
                if self.mode == "nonce":
                    req.qualifyingData = b"attacker's nonce"
                framing.send_frame(up, framing.serialize(req))
                resp = framing.recv_frame(up)
                assert resp is not None
                if self.mode == "replay":
                    if self.recorded is None:
                        self.recorded = resp
                    resp = self.recorded
                framing.send_frame(c, resp)

    def close(self) -> None:
        self.sock.close()


def test_wrong_nonce_and_replayed_quote_fail_with_their_own_messages(device: tpm2dlib.Tpm2d, ca: tpm2dlib.Ca,
                                                                    tmp_path: Path) -> None:
    cfg = config(tmp_path, ca)
    state = str(tmp_path / "state")
    p = Proxy(device.port, "nonce")
    try:
        r = tpm2dlib.verify(f"127.0.0.1:{p.port}", cfg, "--state-dir", state)
    finally:
        p.close()
    lines = tpm2dlib.check_lines(r.stdout)
    assert r.returncode == 1 and lines["nonce"].startswith("FAIL") and "not the nonce" in lines["nonce"]
    assert lines["quote signature"].startswith("PASS")  # a genuine quote, just not for our nonce
    p = Proxy(device.port, "replay")
    try:
        first = tpm2dlib.verify(f"127.0.0.1:{p.port}", cfg, "--state-dir", state)
        assert first.returncode == 0, first.stdout
        again = tpm2dlib.verify(f"127.0.0.1:{p.port}", cfg, "--state-dir", state)
    finally:
        p.close()
    lines = tpm2dlib.check_lines(again.stdout)
    assert again.returncode == 1
    assert lines["freshness"].startswith("FAIL replayed quote: TPM clock"), lines["freshness"]
    assert lines["nonce"].startswith("FAIL")


@pytest.mark.req("COM 04", "CR 3.4 (1)")
def test_a_pcr_extended_after_boot_breaks_the_event_log_replay(cmld_factory: DaemonFactory, ca: tpm2dlib.Ca,
                                                               tmp_path: Path) -> None:
    with running_swtpm() as tpm:
        log = tpm2dlib.measure_boot(tpm)
        (tmp_path / "eventlog.bin").write_bytes(log)
        t = tpm2dlib.launch(cmld_factory, tpm, "--event-log", str(tmp_path / "eventlog.bin"))
        tpm2dlib.certify_device(t, ca)
        cfg = config(tmp_path, ca, verify_ima=False)
        assert tpm2dlib.verify(t, cfg).returncode == 0
        tpm2dlib.extend(tpm, 4, hashlib.sha256(b"an unmeasured bootloader").digest())
        r = tpm2dlib.verify(t, cfg)
        line = tpm2dlib.check_lines(r.stdout)["event log"]
        assert r.returncode == 1 and "does not replay to quoted PCRs [4]" in line, line
        # A truncated event log is reported as such.
        (tmp_path / "eventlog.bin").write_bytes(log[:-7])
        line = tpm2dlib.check_lines(tpm2dlib.verify(t, cfg).stdout)["event log"]
        assert line.startswith("FAIL event log truncated"), line
        t.daemon.stop()


@pytest.mark.req("CR 1.9")
def test_a_certificate_from_another_ca_fails(device: tpm2dlib.Tpm2d, tmp_path: Path) -> None:
    other = tpm2dlib.make_ca("Some other CA")
    r = tpm2dlib.verify(device, config(tmp_path, other))
    line = tpm2dlib.check_lines(r.stdout)["certificate"]
    assert r.returncode == 1 and "does not chain to the configured CA" in line, line


@pytest.mark.req("CR 1.9")
def test_a_device_certificate_for_another_key_fails_the_binding(device: tpm2dlib.Tpm2d, ca: tpm2dlib.Ca,
                                                                tmp_path: Path) -> None:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    k = rsa.generate_private_key(65537, 2048).public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    (device.daemon.base / "tokens" / "device.cert").write_bytes(tpm2dlib.issue(ca, k, "impostor", device_uuid="x"))
    lines = tpm2dlib.check_lines(tpm2dlib.verify(device, config(tmp_path, ca)).stdout)
    assert lines["certificate"].startswith("PASS")  # a good certificate...
    assert "not signed by the certificate's key" in lines["quote signature"]  # ...for another key
    assert "the certificate's public key is not the quoting key" in lines["ak binding"]


@pytest.mark.req("COM 04", "CR 3.4 (1)")
def test_guestos_images_checked_against_signed_configs_and_a_swapped_image_fails(
        cmld_factory: DaemonFactory, ca: tpm2dlib.Ca, tmp_path: Path, guestos_src: Path) -> None:
    """The measurements cmld will make (image path + SHA-256 of the real GuestOS images), attested
    and compared with the signed GuestOS config."""
    pki = make_pki(tmp_path / "pki", "ec256")
    refs = tmp_path / "guestos-refs"
    refs.mkdir()
    conf = refs / "busybox-1.conf"
    conf.write_bytes((guestos_src / "busybox-1.conf").read_bytes())
    sign(conf, pki)
    (tmp_path / "guestos-ca.pem").write_bytes((pki / "ssig_rootca.cert").read_bytes())
    images = sorted((guestos_src / "busybox-1").glob("*.img"))
    assert images
    with running_swtpm() as tpm:
        t = tpm2dlib.launch(cmld_factory, tpm)
        tpm2dlib.certify_device(t, ca)
        with t.client() as c:
            for img in images:  # as cmld: the installed path and the file's SHA-256
                c.ml_append(f"/var/lib/cml/operatingsystems/busybox-1/{img.name}",
                            hashlib.sha256(img.read_bytes()).digest())
        cfg = config(tmp_path, ca, verify_ima=False, guestos_dir="guestos-refs", guestos_ca="guestos-ca.pem")
        r = tpm2dlib.verify(t, cfg)
        lines = tpm2dlib.check_lines(r.stdout)
        assert r.returncode == 0, r.stdout
        assert lines["guestos images"].startswith(f"PASS {len(images)} images match signed GuestOS configs")
        # A swapped image: same path, other content (PCR 11 replays, the signed hash does not match).
        with t.client() as c:
            c.ml_append(f"/var/lib/cml/operatingsystems/busybox-1/{images[0].name}", hashlib.sha256(b"evil").digest())
        r = tpm2dlib.verify(t, cfg)
        lines = tpm2dlib.check_lines(r.stdout)
        assert lines["containers"].startswith("PASS")
        assert r.returncode == 1 and "is not" in lines["guestos images"] and images[0].name in lines["guestos images"]
        # The config's signature must verify: a tampered reference config is not used.
        conf.write_text(conf.read_text() + "\n")
        line = tpm2dlib.check_lines(tpm2dlib.verify(t, cfg).stdout)["guestos images"]
        assert "no signed GuestOS config names this image" in line and "BAD_SIGNATURE" in line, line
        t.daemon.stop()


def test_hostile_requests_on_9505_get_a_reason_and_the_server_keeps_serving(device: tpm2dlib.Tpm2d) -> None:
    def ask(data: bytes) -> Tpm2dToRemote | None:
        with socket.create_connection(("127.0.0.1", device.port), timeout=15) as s:
            s.sendall(data)
            body = framing.recv_frame(s)
        return None if body is None else framing.parse(Tpm2dToRemote, body)

    cases = [
        (framing.encode_frame(b"\x08"), "not a valid"),
        (framing.encode_frame(b""), "required field"),
        (framing.encode_frame(RemoteToTpm2d(code=RemoteToTpm2d.ATTESTATION_REQ, qualifyingData=b"n" * 65)
                              .SerializeToString()), "at most 64"),
        (framing.encode_frame(RemoteToTpm2d(code=RemoteToTpm2d.ATTESTATION_REQ, atype=ADVANCED, pcrs=1 << 30)
                              .SerializeToString()), "no PCR 0..23 selected"),
        (framing.encode_frame(RemoteToTpm2d(code=RemoteToTpm2d.ATTESTATION_REQ, atype=ADVANCED)
                              .SerializeToString()), "without a pcrs bitmap"),
    ]
    for data, why in cases:
        r = ask(data)
        assert r is not None and why in r.error_message and not r.HasField("quoted"), (data, r)
    for data in (struct.pack(">I", 2 << 20), struct.pack(">I", 50) + b"x"):
        with socket.create_connection(("127.0.0.1", device.port), timeout=15) as s:
            s.sendall(data)
            s.shutdown(socket.SHUT_WR)
            assert s.recv(10) == b""
    assert fetch(device, RemoteToTpm2d(code=RemoteToTpm2d.ATTESTATION_REQ)).HasField("quoted")


def test_verifier_exit_codes_for_bad_config_and_unreachable_device(tmp_path: Path) -> None:
    cfg = tmp_path / "bad.conf"
    cfg.write_text("name: \n")
    r = tpm2dlib.verify("127.0.0.1:1", cfg)
    assert r.returncode == 2 and "Failed to read config file" in r.stderr
    good = tpm2dlib.verifier_config(tmp_path / "ok.conf")
    r = tpm2dlib.verify(f"127.0.0.1:{tpm2dlib.free_port()}", good)
    assert r.returncode == 3 and "FAIL connection" in r.stdout


# ---------------------------------------------------------------------- gRPC, mutual TLS


@pytest.mark.req("COM 02", "CR 1.2", "CR 3.8")
def test_grpc_with_mutual_tls_and_a_fleet(cmld_factory: DaemonFactory, swtpm: Swtpm, world: dict[str, Path],
                                          ca: tpm2dlib.Ca, tmp_path: Path) -> None:
    tls_ca = tpm2dlib.make_ca("CML TLS CA")
    (tmp_path / "tls-ca.pem").write_bytes(tls_ca.pem())
    dev_cert, dev_key = tpm2dlib.tls_pair(tls_ca, "device", tmp_path)
    ver_cert, ver_key = tpm2dlib.tls_pair(tls_ca, "verifier", tmp_path)
    port = tpm2dlib.free_port()
    t = tpm2dlib.launch(cmld_factory, swtpm, "--event-log", str(world["eventlog"]), "--ima-log", str(world["ima"]),
                        "--grpc-listen", f"127.0.0.1:{port}", "--grpc-cert", str(dev_cert), "--grpc-key",
                        str(dev_key), "--grpc-client-ca", str(tmp_path / "tls-ca.pem"),
                        ml_state=world["dir"] / "ml.json")
    tpm2dlib.certify_device(t, ca)
    cfg = config(tmp_path, ca)
    tls = ["--grpc", "--tls-cert", str(ver_cert), "--tls-key", str(ver_key), "--tls-ca",
           str(tmp_path / "tls-ca.pem"), "--tls-server-name", "localhost"]
    r = tpm2dlib.verify(f"localhost:{port}", cfg, *tls)
    assert r.returncode == 0, r.stdout + r.stderr
    # A verifier whose certificate comes from another CA is refused by the device.
    rogue_ca = tpm2dlib.make_ca("rogue")
    rogue_cert, rogue_key = tpm2dlib.tls_pair(rogue_ca, "rogue", tmp_path)
    r = tpm2dlib.verify(f"localhost:{port}", cfg, "--grpc", "--tls-cert", str(rogue_cert), "--tls-key",
                        str(rogue_key), "--tls-ca", str(tmp_path / "tls-ca.pem"), "--tls-server-name", "localhost")
    assert r.returncode == 3 and "FAIL connection" in r.stdout and "gRPC" in r.stdout, r.stdout
    # A device whose TLS certificate the verifier does not trust is refused by the verifier.
    (tmp_path / "rogue-ca.pem").write_bytes(rogue_ca.pem())
    r = tpm2dlib.verify(f"localhost:{port}", cfg, "--grpc", "--tls-cert", str(ver_cert), "--tls-key",
                        str(ver_key), "--tls-ca", str(tmp_path / "rogue-ca.pem"), "--tls-server-name", "localhost")
    assert r.returncode == 3
    # Fleet mode: many attestations in flight, each with its own nonce and every check.
    hosts = tmp_path / "hosts"
    hosts.write_text("".join(f"localhost:{port}\n" for _ in range(12)) + "# a comment\n")
    r = subprocess.run([str(BIN / "cml-rattestation"), "--fleet", str(hosts), str(cfg), *tls, "--concurrency", "6"],
                       capture_output=True, text=True, timeout=300, check=False)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "fleet: 12 of 12 devices verified, 0 failed" in r.stdout
    assert r.stdout.count(": SUCCESSFUL") == 12
