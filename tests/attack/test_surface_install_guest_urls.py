"""The image source of a GuestOS pushed from inside a `feature_install_guest` container: a
relative `file://` URL, which cmld resolves in that container's root. To get that far a push
must be signed; the attacker takes the route the original leaves it: REGISTER_LOCALCA (allowed
on the unprivileged socket, once per device) with a CA of its own, then a config signed by it,
accepted as LOCALLY_SIGNED on a device with `locally_signed_images`. That runs on a cmld of its
own, with scd, on such a device.

Each config states the size and SHA-256 of the host's secret file and points its image at it:
through `..`, a symlink in the container's files to the host path, a directory symlink, the
`/proc/<pid>/root` of cmld or of the container's init, and a FIFO (cmld would block in open(2)
holding the installer). A push that completes, or an answer that tells a size or a hash,
discloses the file; after each one the operator's push must still go through.

The control: the same chain with the secret's bytes copied into the container's own files
installs (LOCALLY_SIGNED), so the refusals are for where the URL points."""

from __future__ import annotations

import hashlib
import os
import secrets
import socket
import subprocess
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from cml_common.messages.control_pb2 import ControllerToDaemon as C
from cml_common.messages.guestos_pb2 import GuestOSConfig, GuestOSMount
from cml_common.textconfig import to_text
from cmld.guestos.install import hardware

from ..conftest import BIN, Daemon, cli, wait_for_socket
from ..host.containers import container_conf, uuid_of
from .arena import MODES, Arena
from .conftest import Judge, modes
from .daemon import stop_daemon, wait_for_state
from .guestos import INSTALLOS
from .surfaces import INSIDE_SOCKET, answer, frame, put_surfatk, replies, surf
from .test_surface_install_guest import PUSHED, _host_push, _pushed_config

DEVICE_CONF = "hostedmode: true\nsigned_configs: false\ntpm_enabled: false\nlocally_signed_images: true\n"


@dataclass
class SignedRig:
    d: Daemon
    run_dir: Path
    pki: Path  # the attacker's CA (registered as the local CA from inside)
    vendor: Path  # the device's trust anchor (tokens/ssig_rootca.cert)
    installers: dict[str, str]
    tmp: Path


@pytest.fixture(scope="module")
def srig(arena: Arena) -> Iterator[SignedRig]:
    pki, vendor = arena.tmp / "atk-pki", arena.tmp / "vendor-pki"
    for p in (pki, vendor):
        if not p.exists():
            subprocess.run([str(BIN / "cml-sign"), "pki", str(p), "--key-type", "ec256"], check=True,
                           capture_output=True)
    base = arena.root / "lsd-base"
    sock = arena.tmp / "lsd-scd.sock"
    with arena.dedicated("lsd", "--stop-timeout", "3", "--scd-socket", str(sock), device_conf=DEVICE_CONF) as d:
        (base / "tokens").mkdir(exist_ok=True)
        (base / "tokens" / "ssig_rootca.cert").write_bytes((vendor / "ssig_rootca.cert").read_bytes())
        err = (arena.tmp / "lsd-scd.stderr").open("ab")
        scd = subprocess.Popen([str(BIN / "scd"), "--foreground", "--base-dir", str(base), "--socket", str(sock),
                                "--log-dir", str(arena.tmp / "lsd-scd-logs")], stdin=subprocess.DEVNULL,
                               stdout=subprocess.DEVNULL, stderr=err)
        scd_d = Daemon(scd, sock, base, arena.tmp / "lsd-scd-logs")
        try:
            wait_for_socket(sock, scd, socket.SOCK_SEQPACKET, stderr_file=arena.tmp / "lsd-scd.stderr")
            run_dir = arena.tmp / "lsd-run"
            installers = {}
            for mode in MODES:
                name = f"lsi-{'u' if mode == 'userns' else 'n'}"
                conf = arena.tmp / f"{name}.conf"
                conf.write_text(container_conf(name, INSTALLOS, userns=(mode == "userns"), ram_limit=48))
                assert cli(d.socket, "create", str(conf)).rc == 0
                r = cli(d.socket, "start", name, timeout=60)
                assert r.rc == 0, r.out + r.err
                wait_for_state(d, name, "RUNNING", timeout=30)
                put_surfatk(arena, name, d=d, run_dir=run_dir)
                installers[mode] = name
            yield SignedRig(d, run_dir, pki, vendor, installers, arena.tmp)
        finally:
            stop_daemon(scd_d)
            err.close()


def _sign(rig: SignedRig, raw: bytes, pki: Path | None = None) -> tuple[bytes, bytes]:
    pki = pki or rig.pki
    conf = rig.tmp / "lsd-push.conf"
    conf.write_bytes(raw)
    r = subprocess.run([str(BIN / "cml-sign"), "sign", str(conf), "-k", str(pki / "ssig_cml.key"), "--cert",
                        str(pki / "ssig_cml.chain")], capture_output=True, text=True, check=False)
    assert r.returncode == 0, r.stderr
    return conf.with_suffix(".sig").read_bytes(), conf.with_suffix(".cert").read_bytes()


def _push_inside(arena: Arena, rig: SignedRig, container: str, raw: bytes) -> tuple[list[str], str]:
    sig, cert = _sign(rig, raw)
    out = surf(arena, container, "sock", INSIDE_SOCKET,
               frame(C(command=C.PUSH_GUESTOS_CONFIG, guestos_config_file=raw, guestos_config_signature=sig,
                       guestos_config_certificate=cert)).hex(), d=rig.d, timeout=120)
    got = replies(out)
    if not got or answer(got[-1]) == "GUESTOS_MGR_INSTALL_STARTED":
        # the installer did not answer within surfatk's wait: it is stuck
        return [answer(m) for m in got] + ["(no final answer)"], out[-200:]
    return [answer(m) for m in got], " ".join(m.error_message for m in got)


def _remove_pushed(arena: Arena, rig: SignedRig) -> None:
    """Every version of the pushed GuestOS (REMOVE_GUESTOS takes the latest)."""
    for _ in range(5):
        if not any(p.name.startswith(f"{PUSHED}-") for p in (arena.root / "lsd-base" / "operatingsystems").iterdir()):
            return
        r = cli(rig.d.socket, "remove_guestos", PUSHED)
        assert r.rc == 0, r.out + r.err


def _register_local_ca(arena: Arena, rig: SignedRig, container: str) -> str:
    """The attacker's own CA as the device's local CA: allowed on the unprivileged socket, once."""
    ca = (rig.pki / "ssig_rootca.cert").read_bytes()
    reg = [answer(m) for m in replies(surf(arena, container, "sock", INSIDE_SOCKET,
                                           frame(C(command=C.REGISTER_LOCALCA, guestos_rootcert=ca)).hex(),
                                           d=rig.d))]
    assert reg[-1] in ("GUESTOS_MGR_REGISTER_CA_OK", "GUESTOS_MGR_REGISTER_CA_ERROR"), reg
    return reg[-1]


def _tree(root: Path, top: str, version: int = 1) -> Path:
    d = root / top / "operatingsystems" / hardware() / f"{PUSHED}-{version}"
    d.mkdir(parents=True, exist_ok=True)
    return d


@modes()
def test_disclosure_install_guest_file_url_escapes_root(arena: Arena, srig: SignedRig, mode: str, judge: Judge,
                                                        unaffected: Callable[[], None]) -> None:
    container = srig.installers[mode]
    pid = arena.init_pid(uuid_of(srig.d, container), srig.run_dir)
    root = Path(f"/proc/{pid}/root")
    secret_path = arena.hostdir / "secret.txt"
    secret = secret_path.read_bytes()
    reg = _register_local_ca(arena, srig, container)
    # the plants, in the container's own files
    _tree(root, "tmp/ok").joinpath("payload.img").write_bytes(secret)
    link = _tree(root, "tmp/sl") / "payload.img"
    link.unlink(missing_ok=True)
    link.symlink_to(secret_path)
    dl = root / "tmp/dl"
    if not dl.is_symlink():
        dl.symlink_to(f"/proc/{srig.d.proc.pid}/root{arena.root}/urlsrc")
    _tree(arena.root, "urlsrc").joinpath("payload.img").unlink(missing_ok=True)
    _tree(arena.root, "urlsrc").joinpath("payload.img").symlink_to(secret_path)
    fifo = _tree(root, "tmp/ff") / "payload.img"
    if not fifo.exists():
        os.mkfifo(fifo)
    urls = {"..": "file://" + "../" * 12 + str(arena.root / "urlsrc").lstrip("/"),
            "symlink": "file://tmp/sl", "dir symlink to /proc/<cmld>/root": "file://tmp/dl",
            "/proc/<cmld>/root": f"file://proc/{srig.d.proc.pid}/root{arena.root}/urlsrc",
            "/proc/1/root": f"file://proc/1/root{arena.root}/urlsrc", "fifo": "file://tmp/ff"}
    found = []
    try:
        for what, url in urls.items():
            answers, text = _push_inside(arena, srig, container, _pushed_config(url, secret))
            if "GUESTOS_MGR_INSTALL_COMPLETED" in answers or "SHA-256" in text or " bytes" in text:
                judge.succeeded(f"{what} ({url}): {answers} {text[:200]}")
            if "(no final answer)" in answers:
                judge.succeeded(f"{what} ({url}): cmld's installer is stuck: {answers}")
            found.append(f"{what}: {text.rsplit(': ', 1)[-1] if text else answers[-1]}")
        # control: the chain works when the image is the container's own file
        answers, text = _push_inside(arena, srig, container, _pushed_config("file://tmp/ok", secret))
        assert answers[-1] == "GUESTOS_MGR_INSTALL_COMPLETED", (answers, text)
    finally:
        _remove_pushed(arena, srig)
    judge.blocked(f"local CA registered from inside ({reg}), locally signed pushes: {'; '.join(found)}; "
                  "control: the same push of its own copy installed")
    unaffected()


@modes()
def test_modification_install_guest_replaces_vendor_signed_guestos(arena: Arena, srig: SignedRig, mode: str,
                                                                   judge: Judge,
                                                                   unaffected: Callable[[], None]) -> None:
    """A GuestOS the vendor signed is installed (containers run it); the attacker, with its CA
    registered as the local CA, pushes a newer version of it signed by itself, with images of its
    own: every container of that GuestOS would run the attacker's software at its next start."""
    container = srig.installers[mode]
    pid = arena.init_pid(uuid_of(srig.d, container), srig.run_dir)
    root = Path(f"/proc/{pid}/root")
    reg = _register_local_ca(arena, srig, container)
    vendor_data, own_data = secrets.token_bytes(4096), secrets.token_bytes(4096)
    _tree(root, "tmp/v", 1).joinpath("payload.img").write_bytes(vendor_data)
    _tree(root, "tmp/v", 2).joinpath("payload.img").write_bytes(own_data)
    try:
        raw1 = _pushed_config(f"file:///proc/{pid}/root/tmp/v", vendor_data, 1)
        got = _host_push(arena, raw1, *_sign(srig, raw1, srig.vendor), sock=srig.d.socket)
        assert got[-1] == "GUESTOS_MGR_INSTALL_COMPLETED", f"the vendor's GuestOS did not install: {got}"
        answers, text = _push_inside(arena, srig, container, _pushed_config("file://tmp/v", own_data, 2))
        installed = sorted(p.name for p in (arena.root / "lsd-base" / "operatingsystems").iterdir()
                           if p.name.startswith(f"{PUSHED}-2"))
        if "GUESTOS_MGR_INSTALL_COMPLETED" in answers or installed:
            judge.succeeded(f"the vendor-signed {PUSHED}-1 replaced by the attacker's {PUSHED}-2 (LOCALLY_SIGNED): "
                            f"{answers} {installed}")
        assert answers[-1] == "GUESTOS_MGR_INSTALL_FAILED" and "may not replace" in text, (answers, text)
        judge.blocked(f"local CA from inside: {reg}; its {PUSHED}-2 over the vendor's {PUSHED}-1: {text}")
        # control: without the vendor's version there, the same push installs
        _remove_pushed(arena, srig)
        answers, text = _push_inside(arena, srig, container, _pushed_config("file://tmp/v", own_data, 2))
        assert answers[-1] == "GUESTOS_MGR_INSTALL_COMPLETED", (answers, text)
        judge.blocked("control: the same push installs where no vendor-signed version is")
    finally:
        _remove_pushed(arena, srig)
    unaffected()


def _flash_config(url: str, data: bytes, target: str, name: str = PUSHED, version: int = 1) -> bytes:
    """A system update: one FLASH image of `data` for the partition `target`."""
    cfg = GuestOSConfig(name=name, version=version, hardware=hardware(), update_base_url=url)
    cfg.description.en = "pushed by the attack suite"
    cfg.mounts.append(GuestOSMount(image_file="payload", mount_point=target, fs_type="raw",
                                   mount_type=GuestOSMount.FLASH, image_size=len(data),
                                   image_sha2_256=hashlib.sha256(data).hexdigest()))
    return to_text(cfg).encode()


@modes()
def test_modification_install_guest_flashes_a_device_partition(arena: Arena, srig: SignedRig, mode: str,
                                                               judge: Judge,
                                                               unaffected: Callable[[], None]) -> None:
    """With its CA registered as the local CA, the attacker pushes a system update signed by
    itself: a FLASH image for one of the device's partitions (a loop device here), as a GuestOS of
    its own name and as the `kernel` pseudo-GuestOS. Written, it would own the device's next boot."""
    container = srig.installers[mode]
    pid = arena.init_pid(uuid_of(srig.d, container), srig.run_dir)
    root = Path(f"/proc/{pid}/root")
    reg = _register_local_ca(arena, srig, container)
    backing = arena.tmp / f"flash-{mode}.img"
    original = secrets.token_bytes(64 * 1024)
    backing.write_bytes(original)
    loop = subprocess.run(["losetup", "-f", "--show", str(backing)], capture_output=True, text=True, check=True)
    dev = loop.stdout.strip()
    own = secrets.token_bytes(8192)
    try:
        found = []
        for name in (PUSHED, "kernel"):
            d = root / "tmp/fl/operatingsystems" / hardware() / f"{name}-1"
            d.mkdir(parents=True, exist_ok=True)
            (d / "payload.img").write_bytes(own)
            answers, text = _push_inside(arena, srig, container, _flash_config("file://tmp/fl", own, dev, name))
            with open(dev, "rb") as f:
                now = f.read(len(own))
            if "GUESTOS_MGR_INSTALL_COMPLETED" in answers or now == own:
                judge.succeeded(f"{name}: the attacker's FLASH image went to {dev}: {answers} {text[:200]}")
            assert answers[-1] == "GUESTOS_MGR_INSTALL_FAILED" and "must be vendor-signed" in text, (answers, text)
            assert now == original[:len(own)]
            found.append(f"{name}: {text.rsplit(': ', 1)[-1]}")
        judge.blocked(f"local CA from inside: {reg}; locally signed FLASH pushes: {'; '.join(found)}")
        # control: the vendor-signed update, pushed by the operator, is written to the partition
        raw = _flash_config(f"file:///proc/{pid}/root/tmp/fl", own, dev)
        got = _host_push(arena, raw, *_sign(srig, raw, srig.vendor), sock=srig.d.socket)
        assert got[-1] == "GUESTOS_MGR_INSTALL_COMPLETED", got
        with open(dev, "rb") as f:
            assert f.read(len(own)) == own
        judge.blocked("control: the same update, vendor-signed and pushed by the operator, was written")
    finally:
        _remove_pushed(arena, srig)
        subprocess.run(["losetup", "-d", dev], check=False)
        backing.unlink(missing_ok=True)
    unaffected()
