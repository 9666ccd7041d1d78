"""Helpers for the tpm2d and attestation tests: tpm2d on a private swtpm, a test PKI for device
certificates, synthetic UEFI event logs and IMA lists whose digests are really extended into the
swtpm's PCRs, and the verifier run as a process."""

from __future__ import annotations

import datetime
import hashlib
import socket
import struct
import subprocess
import uuid
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from cml_common.tpm2d_client import Tpm2dClient
from tests.conftest import BIN, Daemon, DaemonFactory
from tests.host.swtpmlib import Swtpm


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Tpm2d:
    daemon: Daemon
    port: int
    swtpm: Swtpm

    @property
    def socket(self) -> Path:
        return self.daemon.socket

    def client(self) -> Tpm2dClient:
        return Tpm2dClient(self.daemon.socket)


def launch(factory: DaemonFactory, tpm: Swtpm, *extra: str, name: str = "tpm2d", base: Path | None = None,
           ml_state: Path | None = None) -> Tpm2d:
    port = free_port()
    base = base or factory.tmp / f"{name}-base"
    d = factory.launch("tpm2d", name, "--tcti", tpm.tcti, "--attest-listen", f"127.0.0.1:{port}",
                       "--ml-state", str(ml_state or factory.tmp / f"{name}-run" / "ml.json"), *extra, base=base)
    return Tpm2d(d, port, tpm)


# ------------------------------------------------------------------------------------ PKI


@dataclass
class Ca:
    key: ec.EllipticCurvePrivateKey
    cert: x509.Certificate

    def pem(self) -> bytes:
        return self.cert.public_bytes(serialization.Encoding.PEM)

    def key_pem(self) -> bytes:
        return self.key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                      serialization.NoEncryption())


def _validity(b: x509.CertificateBuilder) -> x509.CertificateBuilder:
    now = datetime.datetime.now(datetime.UTC)
    return b.not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(now + datetime.timedelta(days=30))


def make_ca(cn: str) -> Ca:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])
    cert = _validity(x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
                     .serial_number(x509.random_serial_number())
                     .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
                     .add_extension(x509.KeyUsage(False, False, False, False, False, True, True, False, False),
                                    critical=True)).sign(key, hashes.SHA256())
    return Ca(key, cert)


def issue(ca: Ca, public_pem: bytes, cn: str, *, device_uuid: str | None = None, server: bool = False) -> bytes:
    pub = serialization.load_pem_public_key(public_pem)
    b = (x509.CertificateBuilder().subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)]))
         .issuer_name(ca.cert.subject).public_key(pub).serial_number(x509.random_serial_number())  # type: ignore[arg-type]
         .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True))
    sans: list[x509.GeneralName] = []
    if device_uuid:
        sans.append(x509.UniformResourceIdentifier(f"UUID:{device_uuid}"))
    if server:
        sans.append(x509.DNSName("localhost"))
        b = b.add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH,
                                                   ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
    if sans:
        b = b.add_extension(x509.SubjectAlternativeName(sans), critical=False)
    return _validity(b).sign(ca.key, hashes.SHA256()).public_bytes(serialization.Encoding.PEM)


def tls_pair(ca: Ca, cn: str, out: Path) -> tuple[Path, Path]:
    key = ec.generate_private_key(ec.SECP256R1())
    pub = key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    cert, keyf = out / f"{cn}.crt", out / f"{cn}.key"
    cert.write_bytes(issue(ca, pub, cn, server=True))
    keyf.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                       serialization.NoEncryption()))
    return cert, keyf


def certify_device(t: Tpm2d, ca: Ca) -> str:
    """Issue the device certificate for tpm2d's key into <base>/tokens/device.cert (as scd would
    after provisioning with a TPM device key); returns the device UUID."""
    with t.client() as c:
        pub = c.device_key_public()
    dev = str(uuid.uuid4())
    tokens = t.daemon.base / "tokens"
    tokens.mkdir(parents=True, exist_ok=True)
    (tokens / "device.cert").write_bytes(issue(ca, pub, "CML device", device_uuid=dev))
    return dev


# ------------------------------------------------------------------ measured-boot material


def sha256(b: bytes) -> bytes:
    return hashlib.sha256(b).digest()


def efi_variable(name: str, value: bytes) -> bytes:
    guid = bytes.fromhex("61dfe48bca93d211aa0d00e098032b8c")
    return guid + struct.pack("<QQ", len(name), len(value)) + name.encode("utf-16-le") + value


def event_log(events: list[tuple[int, int, bytes]]) -> bytes:
    """A crypto-agile TCG2 log (SHA-1 + SHA-256 banks) of (pcr, type, data) events; the digest
    of each event is the hash of its data."""
    spec = (b"Spec ID Event03\0" + struct.pack("<IBBBBI", 0, 0, 2, 0, 2, 2)
            + struct.pack("<HH", 0x0004, 20) + struct.pack("<HH", 0x000B, 32) + b"\0")
    out = struct.pack("<II", 0, 3) + bytes(20) + struct.pack("<I", len(spec)) + spec
    for pcr, etype, data in events:
        out += struct.pack("<III", pcr, etype, 2)
        out += struct.pack("<H", 0x0004) + hashlib.sha1(data).digest()
        out += struct.pack("<H", 0x000B) + sha256(data)
        out += struct.pack("<I", len(data)) + data
    return out


BOOT_EVENTS: list[tuple[int, int, bytes]] = [
    (0, 0x80000008, b"platform firmware blob"),
    (1, 0x80000002, b"platform config"),
    (7, 0x80000001, efi_variable("SecureBoot", b"\x00")),
    *[(p, 0x4, b"\0\0\0\0") for p in range(8)],
    (4, 0x80000003, b"EFI boot application: the kernel"),
    (5, 0x80000006, b"GPT"),
]


def extend(tpm: Swtpm, pcr: int, digest: bytes) -> None:
    tpm.tool("tpm2_pcrextend", f"{pcr}:sha256={digest.hex()}")


def measure_boot(tpm: Swtpm, events: list[tuple[int, int, bytes]] = BOOT_EVENTS) -> bytes:
    """Extend the swtpm's PCRs as firmware would for `events`; returns the matching event log."""
    for pcr, _etype, data in events:
        extend(tpm, pcr, sha256(data))
    return event_log(events)


def ima_entry(path: str, content: bytes) -> bytes:
    digest = b"sha256:\0" + sha256(content)
    name = path.encode() + b"\0"
    data = struct.pack("<I", len(digest)) + digest + struct.pack("<I", len(name)) + name
    thash = hashlib.sha1(data).digest()
    return struct.pack("<I", 10) + thash + struct.pack("<I", 6) + b"ima-ng" + struct.pack("<I", len(data)) + data


def measure_ima(tpm: Swtpm, files: list[tuple[str, bytes]]) -> bytes:
    out = b""
    for path, content in files:
        entry = ima_entry(path, content)
        out += entry
        data = entry[4 + 20 + 4 + 6 + 4:]
        extend(tpm, 10, sha256(data))
    return out


# ------------------------------------------------------------------------------- verifier


def verifier_config(path: Path, **fields: object) -> Path:
    lines = ['name: "rattestation"', 'kmod_sign_cert: "yocto.pem"']
    for k, v in fields.items():
        for item in (v if isinstance(v, list) else [v]):
            if isinstance(item, bool):
                lines.append(f"{k}: {'true' if item else 'false'}")
            elif isinstance(item, int) or (isinstance(item, str) and k in ("atype",)):
                lines.append(f"{k}: {item}")
            else:
                lines.append(f'{k}: "{item}"')
    path.write_text("\n".join(lines) + "\n")
    return path


def verify(t: Tpm2d | str, config: Path, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    target = f"127.0.0.1:{t.port}" if isinstance(t, Tpm2d) else t
    return subprocess.run([str(BIN / "cml-rattestation"), target, str(config), *args], capture_output=True,
                          text=True, timeout=timeout, check=False)


def check_lines(out: str) -> dict[str, str]:
    """{check name: "PASS <detail>"/"FAIL <detail>"} from the verifier's text output."""
    res = {}
    for line in out.splitlines():
        head, sep, detail = line.partition(": ")
        status, _, name = head.partition(" ")
        if sep and status in ("PASS", "FAIL", "SKIP"):
            res[name] = f"{status} {detail}"
    return res
