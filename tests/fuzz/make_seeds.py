"""Writes the fuzzing seed corpus (tests/fuzz/corpus/<target>/) and the fixed context the
verifier and scd targets use (tests/fuzz/data/). Run once, as root (it starts swtpm, tpm2d and
cmld to capture real frames); the output is checked in, so fuzz runs are reproducible:

    .venv/bin/python -m tests.fuzz.make_seeds

Seeds come from the original's formats: the configs shown in the inventory and user docs
(device.conf, container configs, GuestOS configs, rattestation.conf), frames of every command and
code as our clients and the original's send them, and frames captured from the real daemons
(cmld's replies, a tpm2d attestation response on a swtpm, its event log and IMA list).
"""

from __future__ import annotations

import datetime
import hashlib
import json
import socket
import struct
import sys
import tempfile
import uuid
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.x509.oid import NameOID

from cml_common import framing
from cml_common.messages.attestation_pb2 import ADVANCED, ALL, BASIC, RemoteToTpm2d, Tpm2dToRemote
from cml_common.messages.c_service_pb2 import ServiceToCmldMessage
from cml_common.messages.control_pb2 import ContainerStartParams, ControllerToDaemon
from cml_common.messages.scd_pb2 import DaemonToToken, HashAlgo, TokenType
from cml_common.messages.tpm2d_pb2 import ControllerToTpm
from tests.fuzz.registry import CORPUS, HERE

DATA = HERE / "data"
FIXED_UUID = "2b0a2f8e-6a35-4f0c-9d51-1c4c2f6a7e10"
NONCE = bytes(range(32))


def put(target: str, data: bytes) -> None:
    d = CORPUS / target
    d.mkdir(parents=True, exist_ok=True)
    (d / hashlib.sha1(data).hexdigest()).write_bytes(data)


# ------------------------------------------------------------------ configs (the original's formats)

DEVICE_CONFS = [
    b'update_base_url: "file://var/cml-updates"\nhost_addr: "10.0.2.15"\nhost_subnet: 24\nhost_if: "eth0"\n'
    b'host_gateway: "10.0.2.2"\nhost_dns: "10.0.2.3"\naudit_size: 50\n',
    b"hostedmode: true\nsigned_configs: false\ntpm_enabled: false\n",
    b'uuid: "' + FIXED_UUID.encode() + b'"\n',
    b"locally_signed_images: true\nsigned_configs: true\n",
]
CONTAINER_CONFS = [
    b'name: "core0"\nguest_os: "trustx-coreos"\nguestos_version: 1\nassign_dev: "c 4:1 rwm"\n',
    b'name: "core0"\nguest_os: "debos"\ncolor: 0\ntype: CONTAINER\nassign_dev: "c 4:1 rwm"\n'
    b'allow_dev: "c 116:1 rw"\nnet_ifaces: "eth2"\n',
    b'name: "samplecontainer"\nguest_os: "sampleos"\nguestos_version: 1\nassign_dev: "c 4:1 rwm"\n'
    b'ram_limit: 1024\nstorage_size: 1024\ntoken_type: NONE\nusb_configs { id: "1050:0407" serial: "123" '
    b'assign: true type: TOKEN }\n',
    b'name: "demo"\nguest_os: "busybox"\ncolor: 0\ntype: CONTAINER\ntoken_type: NONE\nusers { name: "u" '
    b'uid: 1000 }\nfifos: "f"\ninit_env_plus: "A=B"\ndns_server: "10.0.0.1"\n',
]
GUESTOS_CONFS = [
    b'name: "core"\nhardware: "x86"\nversion: 1\ninit_path: "/sbin/cservice"\ninit_param: "init"\n'
    b'init_env: "container=trustm3"\nmounts {\n\timage_file: "root"\n\tmount_point: "/"\n\tfs_type: "squashfs"\n'
    b'\tmount_type: SHARED_RW\n}\nmounts {\n\timage_file: "etc"\n\tmount_point: "/etc"\n\tfs_type: "ext4"\n'
    b'\tmount_type: OVERLAY_RW\n}\nmounts {\n\timage_file: "tmpfs"\n\tmount_point: "/data/"\n\tfs_type: "tmpfs"\n'
    b'\tmount_type: EMPTY\n\tdef_size: 12\n}\ndescription {\n\ten: "yocto based core userland (x86)"\n}\n',
    b'name: "deb"\nhardware: "x86"\nversion: 1\ninit_path: "/sbin/init"\nmounts_setup { image_file: "root" '
    b'mount_point: "/" fs_type: "squashfs" mount_type: SHARED_RW }\nmounts { image_file: "enc_root" mount_point: "/" '
    b'fs_type: "ext4" mount_type: EMPTY }\nmounts { image_file: "tmpfs" mount_point: "/data/" fs_type: "tmpfs" '
    b'mount_type: EMPTY def_size: 12 }\ndescription { en: "gnu/debian userland (x86)" }\n',
    b'name: "busybox"\nhardware: "x86"\nversion: 3\nupdate_base_url: "file://../updates"\n'
    b'mounts { image_file: "root" mount_point: "/" fs_type: "ext4" mount_type: SHARED image_size: 4194304 '
    b'image_sha2_256: "' + b"ab" * 32 + b'" image_verity_sha256: "' + b"cd" * 32 + b'" }\n',
]
RATT_CONFS = [
    b'name: "rattestation"\nkmod_sign_cert: "yocto.pem"\n\natype: BASIC\n\n'
    + b"".join(b'pcr_values {\n    number: %d\n    value: "0X%s"\n}\n' % (i, b"00" * 32) for i in range(12)),
    b'name: "r"\nkmod_sign_cert: "k.pem"\natype: ADVANCED\npcrs: 2047\nhalg: SHA256\nverify_ima: true\n'
    b'ima_pcr: 10\nverify_containers: true\ncontainer_pcr: 11\nca_cert: "ca.pem"\nevent_log_policy: "policy.json"\n'
    b'guestos_dir: "gos"\nguestos_ca: "ca.pem"\nverify_event_log: true\nport: 9505\ncheck_pcr_values: false\n',
]


def config_seeds() -> None:
    for c in DEVICE_CONFS:
        put("cfg_device", c)
    for c in CONTAINER_CONFS:
        put("cfg_container", c)
    for c in GUESTOS_CONFS:
        put("cfg_guestos", c)
    for c in RATT_CONFS:
        put("cfg_rattestation", c)
    put("eventlog_policy", json.dumps({"description": "release", "pcrs": {"0": "00" * 32, "7": "ff" * 32},
                                       "secure_boot": False, "boot_applications": ["11" * 32]}).encode())
    put("eventlog_policy", b'{"pcrs": {"24": "00"}}')


# ------------------------------------------------------------------ request frames of every code


def control_requests() -> list[bytes]:
    C = ControllerToDaemon
    out = []
    for name, num in C.Command.items():
        m = C(command=num)  # type: ignore[arg-type]
        if name in ("CONTAINER_START", "CONTAINER_STOP", "CONTAINER_FREEZE", "GET_CONTAINER_STATUS",
                    "GET_CONTAINER_CONFIG", "CONTAINER_WIPE", "REMOVE_CONTAINER", "CONTAINER_EXEC_CMD"):
            m.container_uuids.append(FIXED_UUID)
        if name == "CONTAINER_START":
            m.container_start_params.CopyFrom(ContainerStartParams(key="trustme", setup=False))
        if name == "CREATE_CONTAINER":
            m.container_config_file = CONTAINER_CONFS[0]
        if name == "PUSH_GUESTOS_CONFIG":
            m.guestos_config_file = GUESTOS_CONFS[0]
            m.guestos_config_signature = b"sig"
            m.guestos_config_certificate = b"cert"
        if name == "CONTAINER_EXEC_CMD":
            m.exec_command = "/bin/sh"
            m.exec_args.extend(["sh", "-c", "true"])
        out.append(m.SerializePartialToString())
    return out


def other_requests() -> dict[str, list[bytes]]:
    S, Q, P, R = ServiceToCmldMessage, DaemonToToken, ControllerToTpm, RemoteToTpm2d
    service = [S(code=v).SerializeToString() for v in S.Code.values()]  # type: ignore[arg-type]
    scd = []
    for v in Q.Code.values():
        m = Q(code=v, token_type=TokenType.SOFT, token_uuid=FIXED_UUID)  # type: ignore[arg-type]
        scd.append(m.SerializePartialToString())
    scd.append(Q(code=Q.CRYPTO_HASH_BUF, hash_algo=HashAlgo.SHA256, hash_buf=b"abc").SerializeToString())
    scd.append(Q(code=Q.UNLOCK, token_type=TokenType.SOFT, token_uuid=FIXED_UUID, token_pin="trustme",
                 pairing_secret=b"x" * 32).SerializePartialToString())
    tpm = [P(code=v).SerializeToString() for v in P.Code.values()]  # type: ignore[arg-type]
    tpm.append(P(code=P.ML_APPEND, ml_filename="busybox-1/root.img", ml_datahash=bytes(32),
                 ml_hashalg=32).SerializeToString())
    tpm.append(P(code=P.RANDOM_REQ, rand_size=16).SerializeToString())
    remote = [R(code=R.ATTESTATION_REQ, atype=a, qualifyingData=NONCE, attest_ima=True, attest_containers=True,
                attest_event_log=True, pcrs=0x7FF).SerializeToString() for a in (BASIC, ADVANCED, ALL)]
    return {"msg_service": service, "msg_scd": scd, "msg_tpm2d": tpm, "msg_remote": remote}


def frame_seeds(bodies: list[bytes]) -> None:
    put("frame_stream", b"".join(framing.encode_frame(b) for b in bodies[:5]))
    put("frame_stream", struct.pack(">I", 0))
    put("frame_stream", struct.pack(">I", 4095) + b"x" * 10)
    put("frame_seqpacket", b"".join(struct.pack(">I", len(b)) + b for b in bodies[:3]))


# ------------------------------------------------------------------ scd material


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def _cert(subject: str, pub: object, issuer: str, key: object, *, ca: bool, san: str | None = None) -> x509.Certificate:
    now = datetime.datetime(2026, 1, 1, tzinfo=datetime.UTC)
    b = (x509.CertificateBuilder().subject_name(_name(subject)).issuer_name(_name(issuer)).public_key(pub)  # type: ignore[arg-type]
         .serial_number(x509.random_serial_number()).not_valid_before(now)
         .not_valid_after(now + datetime.timedelta(days=3650))
         .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True))
    if san:
        b = b.add_extension(x509.SubjectAlternativeName([x509.UniformResourceIdentifier(san)]), critical=False)
    return b.sign(key, hashes.SHA256())  # type: ignore[arg-type]


def _pem(c: x509.Certificate) -> bytes:
    return c.public_bytes(serialization.Encoding.PEM)


def scd_seeds() -> None:
    from scd.tokens.soft import SoftToken

    d = DATA / "scd"
    d.mkdir(parents=True, exist_ok=True)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = _cert("fuzz root", ca_key.public_key(), "fuzz root", ca_key, ca=True)
    (d / "ca.pem").write_bytes(_pem(ca))
    ec_key = ec.generate_private_key(ec.SECP256R1())
    rsa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    inter_key = ec.generate_private_key(ec.SECP256R1())
    inter = _cert("fuzz intermediate", inter_key.public_key(), "fuzz root", ca_key, ca=True)
    ec_leaf = _cert("fuzz signer ec", ec_key.public_key(), "fuzz intermediate", inter_key, ca=False)
    rsa_leaf = _cert("fuzz signer rsa", rsa_key.public_key(), "fuzz root", ca_key, ca=False)
    payload = GUESTOS_CONFS[0]

    def seed(data: bytes, sig: bytes, mode: int, cert: bytes) -> bytes:
        return struct.pack(">H", len(data)) + data + struct.pack(">H", len(sig)) + sig + bytes([mode]) + cert

    put("scd_verify", seed(payload, ec_key.sign(payload, ec.ECDSA(hashes.SHA256())), 0, _pem(ec_leaf) + _pem(inter)))
    put("scd_verify", seed(payload, rsa_key.sign(payload, padding.PKCS1v15(), hashes.SHA512()), 4, _pem(rsa_leaf)))
    put("scd_verify", seed(payload, rsa_key.sign(payload, padding.PSS(padding.MGF1(hashes.SHA256()),
                                                                      padding.PSS.DIGEST_LENGTH), hashes.SHA256()),
                           1 | 16, _pem(rsa_leaf)))
    # The device identity: its key, its UUID, a certificate for it.
    dev_key = ec.generate_private_key(ec.SECP256R1())
    (d / "device_pub.pem").write_bytes(dev_key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo))
    (d / "device_uuid").write_text(FIXED_UUID + "\n")
    put("scd_device_cert", _pem(_cert("CML device", dev_key.public_key(), "fuzz root", ca_key, ca=False,
                                      san=f"UUID:{FIXED_UUID}")) + _pem(ca))
    put("scd_device_cert", _pem(_cert("other", dev_key.public_key(), "fuzz root", ca_key, ca=False,
                                      san=f"UUID:{uuid.uuid4()}")))
    with tempfile.TemporaryDirectory() as tmp:
        tok = SoftToken(FIXED_UUID, Path(tmp))
        tok.open()
        put("scd_pkcs12", tok.path.read_bytes())


# ------------------------------------------------------------------ captured from the real daemons


def capture_tpm2d() -> None:
    from tests.conftest import DaemonFactory
    from tests.host import tpm2dlib
    from tests.host.swtpmlib import running_swtpm

    v = DATA / "verifier"
    v.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp, running_swtpm() as tpm:
        t0 = Path(tmp)
        factory = DaemonFactory(t0)
        try:
            (t0 / "eventlog.bin").write_bytes(tpm2dlib.measure_boot(tpm))
            (t0 / "ima.bin").write_bytes(tpm2dlib.measure_ima(tpm, [("/bin/sh", b"shell"), ("/sbin/init", b"init")]))
            ca = tpm2dlib.make_ca("fuzz attestation CA")
            t = tpm2dlib.launch(factory, tpm, "--event-log", str(t0 / "eventlog.bin"), "--ima-log", str(t0 / "ima.bin"))
            tpm2dlib.certify_device(t, ca)
            with t.client() as c:
                c.send(ControllerToTpm(code=ControllerToTpm.ML_APPEND, ml_filename="busybox-1/root.img",
                                          ml_datahash=hashlib.sha256(b"img").digest(), ml_hashalg=32))
            req = RemoteToTpm2d(code=RemoteToTpm2d.ATTESTATION_REQ, atype=BASIC, qualifyingData=NONCE,
                                attest_ima=True, attest_containers=True, attest_event_log=True)
            with socket.create_connection(("127.0.0.1", t.port), timeout=30) as s:
                framing.send_frame(s, req.SerializeToString())
                body = framing.recv_frame(s)
            assert body is not None
            resp = framing.parse(Tpm2dToRemote, body)
            assert resp.HasField("quoted"), resp.error_message
        finally:
            factory.stop_all()
    (v / "response.bin").write_bytes(body)
    (v / "nonce").write_bytes(NONCE)
    (v / "ca.pem").write_bytes(ca.pem())
    (v / "yocto.pem").write_bytes(ca.pem())
    (v / "rattestation.conf").write_text('name: "fuzz"\nkmod_sign_cert: "yocto.pem"\natype: BASIC\n'
                                          'ca_cert: "ca.pem"\nverify_ima: true\nverify_containers: true\n'
                                          'verify_event_log: true\ncheck_pcr_values: false\n')
    put("attestation_response", body)
    put("attestation_fields", b"\x00" + bytes(resp.quoted))
    put("tpm_structs", b"\x00" + bytes(resp.quoted))
    put("tpm_structs", b"\x01" + bytes(resp.signature))
    if resp.ak_public:
        put("tpm_structs", b"\x02" + bytes(resp.ak_public))
    put("event_log", bytes(resp.uefi_event_log))
    put("ima_list", bytes(resp.ml_ima_entry))
    put("msg_remote", req.SerializeToString())


def capture_cmld(bodies: list[bytes]) -> None:
    """cmld's replies to every command, for the CLI codec."""
    from tests.conftest import DaemonFactory

    with tempfile.TemporaryDirectory() as tmp:
        factory = DaemonFactory(Path(tmp))
        try:
            d = factory.start()
            with socket.socket(socket.AF_UNIX) as s:
                s.connect(str(d.socket))
                s.settimeout(10)
                for b in bodies:
                    if ControllerToDaemon.FromString(b).command in (ControllerToDaemon.REBOOT_DEVICE,
                                                                    ControllerToDaemon.WIPE_DEVICE,
                                                                    ControllerToDaemon.SET_PROVISIONED):
                        continue
                    framing.send_frame(s, b)
                    rep = framing.recv_frame(s)
                    if rep:
                        put("cli_reply_codec", rep)
        finally:
            factory.stop_all()


def main() -> None:
    config_seeds()
    bodies = control_requests()
    for b in bodies:
        put("msg_control", b)
    for target, seeds in other_requests().items():
        for b in seeds:
            put(target, b)
    frame_seeds(bodies)
    scd_seeds()
    if "--offline" not in sys.argv:
        capture_tpm2d()
        capture_cmld(bodies)


if __name__ == "__main__":
    main()
