"""Device operations with the real cmld (and scd for tokens): WIPE_DEVICE on a device with c0
running (files gone, CMD_OK, then the device goes down c0 first), and in hosted mode with a running
container; CONTAINER_UPDATE_CONFIG with another token type wipes the container and releases its
pairing (running or not), the same token wipes nothing; the create-time disk-space check
(required + 20 % of the file system) with a clear error and nothing stored."""

from __future__ import annotations

import subprocess
import time
import uuid as uuidlib
from pathlib import Path

import pytest

from ..conftest import Daemon, DaemonFactory, cli, is_root
from .containers import container_conf, create, host_leaks, install_guestos, start, uuid_of, wait_state
from .scdlib import scd_and_cmld

pytestmark = [pytest.mark.host, pytest.mark.skipif(not is_root(), reason="needs root")]
DEVICE_CONF = 'hostedmode: false\nsigned_configs: false\ntpm_enabled: false\nc0os: "coreos"\n'
PIN = "pin-9Zt2w"


def _links(tmp: Path, files: list[Path]) -> list[Path]:
    d = tmp / "second-names"
    d.mkdir(exist_ok=True)
    out = []
    for f in files:
        assert f.stat().st_size > 0 and not _all_zero(f), f
        (d / f.name).hardlink_to(f)
        out.append(d / f.name)
    return out


def _all_zero(p: Path, n: int = -1) -> bool:
    with p.open("rb") as f:
        data = f.read(n)
    return data == bytes(len(data))


def test_wipe_device_on_a_device_with_c0_running(cmld_factory: DaemonFactory, guestos_src: Path) -> None:
    base = cmld_factory.tmp / "cmld-base"
    base.mkdir()
    install_guestos(guestos_src, base, name="coreos")
    install_guestos(guestos_src, base, name="busybox")
    (base / "containers").mkdir(mode=0o700)
    svc = str(uuidlib.uuid4())
    (base / "containers" / f"{svc}.conf").write_text(container_conf("svc", allow_autostart=True))
    (base / "keys").mkdir(mode=0o700)
    (base / "keys" / "device_pairing_secret").write_bytes(b"12345678")
    (base / "tokens").mkdir()
    (base / "tokens" / "device_id.conf").write_text('uuid: "x"\n')
    d = cmld_factory.start("--stop-timeout", "10", "--c0-down", "exit", base=base, device_conf=DEVICE_CONF)
    wait_state(d, "svc", "RUNNING", timeout=30)
    # second names for the secrets: what an unlinked file leaves on the disk is what they show after
    kept = _links(cmld_factory.tmp, [base / "keys" / "device_pairing_secret", base / "tokens" / "device_id.conf"])
    r = cli(d.socket, "wipe_device")
    assert r.out == "code: RESPONSE\nresponse: CMD_OK\n", r.out + r.err
    assert {p.name: _all_zero(p) for p in kept} == {p.name: True for p in kept}
    for gone in ("operatingsystems", "tokens"):
        assert not (base / gone).exists(), gone
    assert list((base / "containers").iterdir()) == [] and list((base / "keys").iterdir()) == []
    # then the device goes down as when c0 stops: c0, the others, and (--c0-down exit) cmld
    d.proc.wait(60)
    log = d.log_text()
    assert "WIPE_DEVICE: the device goes down" in log
    assert log.index("container c0 (00000000-0000-0000-0000-000000000000): RUNNING -> SHUTDOWN") < \
        log.index("all containers are down: cmld exits")
    assert host_leaks(cmld_factory.tmp / "cmld-run", [svc, "00000000-0000-0000-0000-000000000000"]) == []


def test_wipe_device_hosted_stops_running_containers_first(cmld_factory: DaemonFactory, guestos_src: Path) -> None:
    base = cmld_factory.tmp / "cmld-base"
    install_guestos(guestos_src, base)
    d = cmld_factory.start("--stop-timeout", "10", base=base)
    create(d, cmld_factory.tmp, "busy")
    u = uuid_of(d, "busy")
    assert start(d, "busy").rc == 0
    wait_state(d, "busy", "RUNNING")
    images = sorted((base / "containers" / u).glob("*.img"))
    assert images
    kept = _links(cmld_factory.tmp, images)
    r = cli(d.socket, "wipe_device")
    assert r.out == "code: RESPONSE\nresponse: CMD_OK\n", r.out + r.err
    assert {p.name: _all_zero(p, 1 << 20) for p in kept} == {p.name: True for p in kept}  # headers gone
    assert cli(d.socket, "list").out == "code: CONTAINER_STATUS\n"
    assert not (base / "operatingsystems").exists() and list((base / "containers").iterdir()) == []
    assert d.alive() and host_leaks(cmld_factory.tmp / "cmld-run", [u]) == []


def token_conf(name: str, token: str, **extra: object) -> str:
    return container_conf(name, **extra).replace("token_type: NONE", f"token_type: {token}")


def update(d: Daemon, name: str, conf: Path) -> str:
    r = cli(d.socket, "update_config", name, str(conf))
    assert r.rc == 0, r.out + r.err
    return r.out


def test_update_config_with_another_token_wipes_and_unpairs(cmld_factory: DaemonFactory, guestos_src: Path) -> None:
    _, d = scd_and_cmld(cmld_factory, guestos=guestos_src)
    tmp, base = cmld_factory.tmp, d.base
    conf = tmp / "tok.conf"
    conf.write_text(token_conf("tok", "SOFT"))
    assert cli(d.socket, "create", str(conf)).rc == 0
    u = uuid_of(d, "tok")
    r = cli(d.socket, "change_pin", "tok", stdin=f"trustme\n{PIN}\n{PIN}\n")
    assert "CONTAINER_CHANGE_PIN_SUCCESSFUL" in r.out + r.err, r.out + r.err
    assert "CONTAINER_START_OK" in cli(d.socket, "start", "tok", f"--key={PIN}").out
    wait_state(d, "tok", "RUNNING")
    cdir = base / "containers" / u
    assert (base / "keys" / f"{u}.key").exists() and (cdir / "data.img").exists()
    assert (cdir / "token_is_paired").exists()

    # the same token, another RAM limit: nothing is wiped, applied at the next stop
    conf.write_text(token_conf("tok", "SOFT", ram_limit=96))
    update(d, "tok", conf)
    assert (base / "keys" / f"{u}.key").exists() and (cdir / "data.img").exists()
    assert cli(d.socket, "state", "tok").out.count("RUNNING") == 1

    # another token type while it runs: killed, wiped (key and images), the pairing released
    conf.write_text(token_conf("tok", "NONE"))
    out = update(d, "tok", conf)
    assert "token_type: NONE" in out, out
    wait_state(d, "tok", "STOPPED", timeout=15)
    assert not (base / "keys" / f"{u}.key").exists() and not (cdir / "data.img").exists()
    assert not (cdir / "token_is_paired").exists()
    assert "token type SOFT -> NONE; wiping the container and releasing its pairing" in d.log_text()
    # the new config is in force: it starts without a token, on fresh data
    assert "CONTAINER_START_OK" in start(d, "tok").out
    wait_state(d, "tok", "RUNNING")
    assert cli(d.socket, "stop", "tok").rc == 0
    wait_state(d, "tok", "STOPPED", timeout=15)

    # stopped, NONE -> SOFT: wiped again; the new soft token is not paired yet
    conf.write_text(token_conf("tok", "SOFT"))
    update(d, "tok", conf)
    assert not (cdir / "data.img").exists()
    r = cli(d.socket, "start", "tok", f"--key={PIN}")
    assert r.rc != 0 and "TOKEN_UNPAIRED" in r.out, r.out + r.err


def test_create_checks_free_space_with_a_20_percent_reserve(cmld_factory: DaemonFactory, tmp_path: Path,
                                                            guestos_src: Path) -> None:
    base = tmp_path / "small-base"
    base.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=40m,mode=0755", "tmpfs", str(base)], check=True)
    try:
        install_guestos(guestos_src, base)
        d = cmld_factory.start(base=base)
        big = tmp_path / "big.conf"
        big.write_text(container_conf("big") + 'image_sizes { image_name: "data" image_size: 30 }\n')
        r = cli(d.socket, "create", str(big))
        out = r.out + r.err
        assert r.rc != 0 and "not enough disk space for container" in out and "33.0 MiB" in out, out
        assert "must stay free" in out and "20 %" in out, out
        assert list((base / "containers").iterdir()) == []  # nothing stored
        small = tmp_path / "small.conf"
        small.write_text(container_conf("small") + 'image_sizes { image_name: "data" image_size: 16 }\n')
        assert cli(d.socket, "create", str(small)).rc == 0
        # an update needing more than fits is refused the same way; the stored config stays
        small.write_text(container_conf("small") + 'image_sizes { image_name: "data" image_size: 200 }\n')
        r = cli(d.socket, "update_config", "small", str(small))
        assert r.rc != 0 and "not enough disk space for the new config" in r.out + r.err, r.out + r.err
        stored = next((base / "containers").glob("*.conf")).read_text()
        assert "image_size: 16" in stored
        assert cli(d.socket, "list").rc == 0
        d.stop()
    finally:
        cmld_factory.stop_all()
        time.sleep(0.2)
        subprocess.run(["umount", "-l", str(base)], check=False)
