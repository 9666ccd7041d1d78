"""Migration from the original: a data directory laid out and written byte for byte as the C CML
does (inventory §1.5: `device.conf.A`/`.B` after an A/B update, `containers/<uuid>.conf`, raw
`time_t` in `<uuid>.created`, raw `int` in `<uuid>.uid`, `files_shared/_store.img` holding the
BIND_FILE files, `tokens/device_id.conf`) is used as it is by the real cmld; hostile variants
(the same UID offset in two files, a truncated `.uid`) get a clear error and lose nothing."""

from __future__ import annotations

import os
import struct
import subprocess
import time
import uuid as uuidlib
from pathlib import Path

import pytest

from cml_common.messages.guestos_pb2 import GuestOSMount
from cml_common.textconfig import to_text

from ..conftest import Daemon, DaemonFactory, cli, is_root
from .containers import container_conf, install_guestos, run, start, wait_state

pytestmark = [pytest.mark.host, pytest.mark.skipif(not is_root(), reason="needs root")]
EFI_GLOBAL = "8be4df61-93ca-11d2-aa0d-00e098032b8c"
DEVICE_ID = "0a1b2c3d-4e5f-4061-8293-a4b5c6d7e8f9"
MOTD = b"files_shared store of the original\n"
CREATED = 1700000000


def original_uid(path: Path, offset: int) -> None:
    """c_user.c: file_write(path, (char *)&offset, sizeof(offset)) of an int."""
    path.write_bytes(struct.pack("=i", offset))


def original_created(path: Path, when: int) -> None:
    """container.c: the creation time_t written raw."""
    path.write_bytes(struct.pack("=q", when))


def store_image(path: Path, files: dict[str, bytes], tmp: Path) -> None:
    """c_vol.c's `_store.img`: a 100 MB ext4 image (files put in it, here with mkfs -d)."""
    src = tmp / "store-src"
    src.mkdir()
    for name, data in files.items():
        (src / name).write_bytes(data)
    with open(path, "wb") as f:
        f.truncate(100 << 20)
    subprocess.run(["mkfs.ext4", "-q", "-F", "-d", str(src), str(path)], check=True, capture_output=True)


def boot_current(efivars: Path, entry: int) -> None:
    """efivarfs: 4 bytes of attributes (NV|BS|RT), then the entry as a little-endian u16."""
    efivars.mkdir(parents=True, exist_ok=True)
    (efivars / f"BootCurrent-{EFI_GLOBAL}").write_bytes(struct.pack("<IH", 7, entry))


def uid_map(d: Daemon, name: str) -> int:
    out = run(d, name, "nopty", "cat", "/proc/self/uid_map").out.split()
    assert out[0] == "0" and out[2] == "65536", out
    return int(out[1])


def test_a_data_directory_of_the_original_is_used_as_is(cmld_factory: DaemonFactory, guestos_src: Path) -> None:
    tmp = cmld_factory.tmp
    base = tmp / "data-cml"
    cfg = install_guestos(guestos_src, base)
    cfg.mounts.add(image_file="motd", mount_point="/etc/group", fs_type="none", mount_type=GuestOSMount.BIND_FILE)
    (base / "operatingsystems" / "busybox-1.conf").write_text(to_text(cfg))
    # after an A/B update: no plain device.conf; slot B booted; A requires signed configs, B not
    (base / "device.conf.A").write_text("hostedmode: true\nsigned_configs: true\ntpm_enabled: false\n")
    (base / "device.conf.B").write_text("hostedmode: true\nsigned_configs: false\ntpm_enabled: false\n")
    efivars = tmp / "efivars"
    boot_current(efivars, 1)
    (base / "tokens").mkdir()
    (base / "tokens" / "device_id.conf").write_text(f'uuid: "{DEVICE_ID}"\n')
    (base / "files_shared").mkdir()
    store_image(base / "files_shared" / "_store.img", {"motd": MOTD}, tmp)
    store_bytes = (base / "files_shared" / "_store.img").stat().st_size
    containers = base / "containers"
    containers.mkdir(mode=0o700)
    ids = {name: str(uuidlib.uuid4()) for name in ("u1", "u2", "u3", "bf")}
    for name, u in ids.items():
        (containers / f"{u}.conf").write_text(container_conf(name, userns=name != "bf"))
        original_created(containers / f"{u}.created", CREATED)
    original_uid(containers / f"{ids['u1']}.uid", 3)
    original_uid(containers / f"{ids['u2']}.uid", 3)  # hostile: the same range as u1
    (containers / f"{ids['u3']}.uid").write_bytes(b"\x05\x00")  # hostile: truncated

    d = cmld_factory.start("--stop-timeout", "10", "--efivars-dir", str(efivars), base=base, device_conf=None)
    try:
        log = d.log_text()
        assert f"device.conf is {base}/device.conf.B" in log, log
        # slot B's device.conf is in force: an unsigned config is accepted (slot A would refuse it)
        extra = tmp / "extra.conf"
        extra.write_text(container_conf("extra"))
        assert cli(d.socket, "create", str(extra)).rc == 0
        for name, u in ids.items():
            status = cli(d.socket, "state", name).out
            assert f'uuid: "{u}"' in status and f"created: {CREATED}" in status, status

        for name in ("u1", "u2", "u3", "bf"):
            assert "CONTAINER_START_OK" in start(d, name).out, d.log_text()[-2000:]
            wait_state(d, name, "RUNNING")
        starts = {name: uid_map(d, name) for name in ("u1", "u2", "u3")}
        assert len(set(starts.values())) == 3, starts  # never the same UID range
        assert 400000 in starts.values()  # one of the two keeps the original's range (offset 3)
        offsets = {name: struct.unpack("=i", (containers / f"{ids[name]}.uid").read_bytes())[0]
                   for name in ("u1", "u2", "u3")}
        assert {100000 + 100000 * k for k in offsets.values()} == set(starts.values())  # written as the original
        log = d.log_text()
        assert "UID offset 3" in log and "is also held by" in log, log
        assert "truncated: 2 bytes" in log
        assert (containers / f"{ids['u3']}.uid.bad").read_bytes() == b"\x05\x00"  # nothing lost

        # BIND_FILE from the original's store image, mounted nodev/noexec over files_shared/
        assert run(d, "bf", "nopty", "cat", "/etc/group").out.encode() == MOTD
        assert os.path.ismount(base / "files_shared")
        for name in ("u1", "u2", "u3", "bf"):
            assert cli(d.socket, "stop", name).rc == 0
            wait_state(d, name, "STOPPED", timeout=15)
    finally:
        d.stop()
    assert not os.path.ismount(base / "files_shared")  # cmld unmounts what it mounted
    assert (base / "files_shared" / "_store.img").stat().st_size == store_bytes
    deadline = time.monotonic() + 10  # the kernel releases an autoclear loop device a little later
    while True:
        loops = subprocess.run(["losetup", "-j", str(base / "files_shared" / "_store.img")], capture_output=True,
                               text=True, check=False).stdout
        if loops == "" or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert loops == ""


def test_boot_slot_unknown_falls_back_to_the_strict_defaults(cmld_factory: DaemonFactory, tmp_path: Path) -> None:
    """Slot files but no EFI BootCurrent (or a boot from another entry): the original reads the
    plain path, which is gone, so the strict defaults apply (signed configs required)."""
    base = tmp_path / "data-cml"
    base.mkdir()
    (base / "device.conf.A").write_text("hostedmode: true\nsigned_configs: false\n")
    (base / "device.conf.B").write_text("hostedmode: true\nsigned_configs: false\n")
    efivars = tmp_path / "efivars"
    boot_current(efivars, 4)
    d = cmld_factory.start("--efivars-dir", str(efivars), "--hosted", base=base, device_conf=None)
    assert "boot slot is unknown (EFI BootCurrent 0004)" in d.log_text()
    conf = tmp_path / "c.conf"
    conf.write_text(container_conf("c"))
    r = cli(d.socket, "create", str(conf))
    assert r.rc != 0 and "signature" in (r.out + r.err).lower(), r.out + r.err



def original_soft_token(p12: Path, keyfile: Path, name: str, pin: str) -> bytes:
    """What the original's softtoken and c_smartcard leave: `tokens/<uuid>.p12` (RSA-4096 key and a
    self-signed certificate named after the container, encrypted with the PIN), and the 96-byte
    container key sealed as OpenSSL's EVP_Seal does (AES-256-CBC, the session key RSA-encrypted
    with PKCS#1 v1.5), stored raw: [int32 ek_len][int32 ct_len][16-byte IV][ek][ciphertext]."""
    import datetime

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, padding
    from cryptography.hazmat.primitives.asymmetric import padding as asym
    from cryptography.hazmat.primitives.asymmetric import rsa
    from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
    from cryptography.hazmat.primitives.serialization import BestAvailableEncryption, pkcs12
    from cryptography.x509.oid import NameOID

    key = rsa.generate_private_key(public_exponent=65537, key_size=4096)
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = datetime.datetime.now(datetime.UTC)
    cert = (x509.CertificateBuilder().subject_name(subject).issuer_name(subject).public_key(key.public_key())
            .serial_number(1).not_valid_before(now).not_valid_after(now + datetime.timedelta(days=365))
            .sign(key, hashes.SHA256()))
    p12.write_bytes(pkcs12.serialize_key_and_certificates(name.encode(), key, cert, None,
                                                          BestAvailableEncryption(pin.encode())))
    container_key = os.urandom(96)
    session, iv = os.urandom(32), os.urandom(16)
    padder = padding.PKCS7(128).padder()
    enc = Cipher(algorithms.AES(session), modes.CBC(iv)).encryptor()
    ct = enc.update(padder.update(container_key) + padder.finalize()) + enc.finalize()
    ek = key.public_key().encrypt(session, asym.PKCS1v15())
    keyfile.write_bytes(struct.pack("=ii", len(ek), len(ct)) + iv + ek + ct)
    return container_key


def test_tokens_keys_and_pairing_of_the_original_are_used(cmld_factory: DaemonFactory, guestos_src: Path) -> None:
    """A paired soft-token container of the original: its PKCS#12 token, its sealed key file, the
    device pairing secret and the `token_is_paired` marker; the real scd unlocks the token with
    the PIN and unwraps the key, and cmld starts the container without re-pairing or re-keying."""
    from .scdlib import launch_scd, prepare_base

    pin = "pin-4711x"
    base = prepare_base(cmld_factory.tmp / "data-cml", None)
    install_guestos(guestos_src, base)
    u = str(uuidlib.uuid4())
    (base / "containers").mkdir(mode=0o700)
    (base / "containers" / f"{u}.conf").write_text(
        'name: "tok"\nguest_os: "busybox"\ncolor: 0\ntype: CONTAINER\ntoken_type: SOFT\nram_limit: 64\n')
    (base / "containers" / u).mkdir()
    (base / "containers" / u / "token_is_paired").write_bytes(b"")  # file_touch
    (base / "keys").mkdir(mode=0o700)
    pairing = os.urandom(8)
    (base / "keys" / "device_pairing_secret").write_bytes(pairing)
    original_soft_token(base / "tokens" / f"{u}.p12", base / "keys" / f"{u}.key", u, pin)
    keyfile = (base / "keys" / f"{u}.key").read_bytes()
    p12 = (base / "tokens" / f"{u}.p12").read_bytes()
    launch_scd(cmld_factory, base)
    d = cmld_factory.start("--stop-timeout", "10", base=base)

    r = cli(d.socket, "start", "tok", "--key=wrong-pin")
    assert r.rc != 0 and "CONTAINER_START_PASSWD_WRONG" in r.out, r.out + r.err
    r = cli(d.socket, "start", "tok", f"--key={pin}")
    assert r.rc == 0 and "CONTAINER_START_OK" in r.out, r.out + r.err + d.log_text()[-2000:]
    wait_state(d, "tok", "RUNNING")
    assert cli(d.socket, "stop", "tok", f"--key={pin}").rc == 0
    wait_state(d, "tok", "STOPPED", timeout=15)
    # nothing was re-made: the same token, key file and pairing secret
    assert (base / "keys" / f"{u}.key").read_bytes() == keyfile
    assert (base / "tokens" / f"{u}.p12").read_bytes() == p12
    assert (base / "keys" / "device_pairing_secret").read_bytes() == pairing


def test_a_store_image_that_is_not_ext4_refuses_the_start_and_is_kept(cmld_factory: DaemonFactory,
                                                                      guestos_src: Path) -> None:
    base = cmld_factory.tmp / "data-cml"
    cfg = install_guestos(guestos_src, base)
    cfg.mounts.add(image_file="motd", mount_point="/etc/group", fs_type="none", mount_type=GuestOSMount.BIND_FILE)
    (base / "operatingsystems" / "busybox-1.conf").write_text(to_text(cfg))
    (base / "files_shared").mkdir()
    garbage = os.urandom(1 << 20)
    (base / "files_shared" / "_store.img").write_bytes(garbage)
    d = cmld_factory.start("--stop-timeout", "10", base=base)
    conf = cmld_factory.tmp / "bf.conf"
    conf.write_text(container_conf("bf", userns=False))
    assert cli(d.socket, "create", str(conf)).rc == 0
    r = start(d, "bf")
    out = r.out + r.err
    assert r.rc != 0 and "_store.img cannot be mounted" in out and "an ext4 image is expected" in out, out
    assert (base / "files_shared" / "_store.img").read_bytes() == garbage
    assert not os.path.ismount(base / "files_shared")
    assert cli(d.socket, "list").rc == 0
    time.sleep(0.5)
    assert subprocess.run(["losetup", "-j", str(base / "files_shared" / "_store.img")], capture_output=True,
                          text=True, check=False).stdout == ""  # the loop device went with the failed mount
