"""PUSH_GUESTOS_CONFIG end to end (cml-control, cmld, scd): signed GuestOS configs installed with
their images fetched over file:// and http:// and checked; older versions, wrong hashes, missing
images, tampered or unsigned configs refused with nothing written; verification at load."""

from __future__ import annotations

from pathlib import Path

import pytest

from cml_common.messages.guestos_pb2 import GuestOSConfig
from cml_common.textconfig import load_text_file, to_text

from ..conftest import Daemon, DaemonFactory, cli, is_root
from .containers import container_conf, wait_state
from .scdlib import SIGNED_DEVICE_CONF, make_pki, scd_and_cmld, sign

pytestmark = [pytest.mark.host, pytest.mark.skipif(not is_root(), reason="needs root")]


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_pki(tmp_path_factory.mktemp("pki") / "pki", "ec256")


def publish(src: Path, repo: Path, pki: Path, out: Path, *, name: str = "pushos", version: int, url: str,
            image: bytes | None = None, signed: bool = True) -> Path:
    """The demo GuestOS as <name>-<version>: its image under repo's update layout, its config
    (pointing at `url`) signed with the software-signing key."""
    cfg = load_text_file(src / "busybox-1.conf", GuestOSConfig)
    cfg.name, cfg.version, cfg.update_base_url = name, version, url
    img_dir = repo / "operatingsystems" / "x86" / f"{name}-{version}"
    img_dir.mkdir(parents=True, exist_ok=True)
    (img_dir / "root.img").write_bytes(image if image is not None else (src / "busybox-1" / "root.img").read_bytes())
    conf = out / f"{name}-{version}.conf"
    conf.write_text(to_text(cfg))
    if signed:
        sign(conf, pki)
    return conf


def push(d: Daemon, conf: Path) -> tuple[int, str]:
    args = [str(conf)]
    if conf.with_suffix(".sig").exists():
        args += [str(conf.with_suffix(".sig")), str(conf.with_suffix(".cert"))]
    r = cli(d.socket, "push_guestos_config", *args, timeout=120)
    return r.rc, r.out + r.err


def daemons(factory: DaemonFactory, pki: Path) -> tuple[Daemon, Daemon]:
    return scd_and_cmld(factory, pki=pki, device_conf=SIGNED_DEVICE_CONF)


def store(d: Daemon) -> set[str]:
    gos = d.base / "operatingsystems"
    return {str(p.relative_to(gos)) for p in gos.rglob("*")} if gos.exists() else set()


@pytest.mark.req("TSF Updates", "OS 03", "APS 02", "NDR 2.4 (1)", "NDR 3.10", "NDR 3.10 (1)")
def test_push_install_and_refusals(cmld_factory: DaemonFactory, guestos_src: Path, pki: Path,
                                   http_root: tuple[Path, str]) -> None:
    _, d = daemons(cmld_factory, pki)
    tmp = cmld_factory.tmp
    file_repo = tmp / "repo"
    www, http_url = http_root

    # over file://, then a newer version over http://
    conf2 = publish(guestos_src, file_repo, pki, tmp, version=2, url=f"file://{file_repo}")
    rc, out = push(d, conf2)
    assert rc == 0 and "GUESTOS_MGR_INSTALL_COMPLETED" in out and "Waiting for images" in out, out
    conf3 = publish(guestos_src, www, pki, tmp, version=3, url=http_url)
    rc, out = push(d, conf3)
    assert rc == 0 and "GUESTOS_MGR_INSTALL_COMPLETED" in out, out
    listing = cli(d.socket, "list_guestos").out
    assert "name: \"pushos\"" in listing and "version: 3" in listing
    installed = d.base / "operatingsystems" / "pushos-3"
    assert (installed / "root.img").read_bytes() == (guestos_src / "busybox-1" / "root.img").read_bytes()
    assert (d.base / "operatingsystems" / "pushos-3.sig").exists()

    # the pushed GuestOS runs a container, reported SIGNED
    cconf = tmp / "frompush.conf"
    cconf.write_text(container_conf("frompush", "pushos", guestos_version=3))
    sign(cconf, pki)
    r = cli(d.socket, "create", str(cconf), str(cconf.with_suffix(".sig")), str(cconf.with_suffix(".cert")))
    assert r.rc == 0, r.out + r.err
    assert "CONTAINER_START_OK" in cli(d.socket, "start", "frompush").out
    wait_state(d, "frompush", "RUNNING")
    assert "trust_level: SIGNED" in cli(d.socket, "state", "frompush").out
    assert cli(d.socket, "stop", "frompush").rc == 0
    wait_state(d, "frompush", "STOPPED", timeout=15)

    before = store(d)
    # an older version
    rc, out = push(d, conf2)
    assert rc != 0 and "older than the installed 3" in out, out
    # one byte of the image different from what the signed config says
    image = bytearray((guestos_src / "busybox-1" / "root.img").read_bytes())
    image[4096] ^= 0xFF
    (tmp / "bad").mkdir()
    bad = publish(guestos_src, www, pki, tmp / "bad", version=4, url=http_url, image=bytes(image))
    rc, out = push(d, bad)
    assert rc != 0 and "does not match the config" in out, out
    # an image missing on the server
    (tmp / "missing").mkdir()
    missing = publish(guestos_src, www, pki, tmp / "missing", version=5, url=http_url)
    (www / "operatingsystems" / "x86" / "pushos-5" / "root.img").unlink()
    rc, out = push(d, missing)
    assert rc != 0 and "404" in out, out
    # a tampered config, and an unsigned one on a device that requires signatures
    (tmp / "tampered").mkdir()
    tampered = publish(guestos_src, www, pki, tmp / "tampered", version=6, url=http_url)
    tampered.write_bytes(tampered.read_bytes().replace(b"version: 6", b"version: 7"))
    rc, out = push(d, tampered)
    assert rc != 0 and "BAD_SIGNATURE" in out, out
    (tmp / "unsigned").mkdir()
    rc, out = push(d, publish(guestos_src, www, pki, tmp / "unsigned", version=8, url=http_url, signed=False))
    assert rc != 0 and "no signature" in out, out
    assert store(d) == before  # nothing was written for any refused push


@pytest.mark.req("TSF Secure Container Init", "COM 06", "OS 03", "APS 01", "APS 02", "CR 3.4", "NDR 2.4 (1)")
def test_verification_at_load(cmld_factory: DaemonFactory, guestos_src: Path, pki: Path) -> None:
    scd, d = daemons(cmld_factory, pki)
    repo = cmld_factory.tmp / "repo"
    assert push(d, publish(guestos_src, repo, pki, cmld_factory.tmp, version=2, url=f"file://{repo}"))[0] == 0
    d.stop()
    # one byte changed in the installed config: at the next start it is not used
    conf = d.base / "operatingsystems" / "pushos-2.conf"
    conf.write_bytes(conf.read_bytes().replace(b"x86", b"x87"))
    d2 = cmld_factory.start("--scd-socket", str(scd.socket), base=d.base, name="cmld2",
                            device_conf=SIGNED_DEVICE_CONF)
    assert "pushos" not in cli(d2.socket, "list_guestos").out
    assert "GuestOS pushos-2 not used: signature check BAD_SIGNATURE" in d2.log_text()
