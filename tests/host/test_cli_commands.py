"""Every cml-control subcommand against a real cmld over its real socket, checking the text
output an operator or a CI script greps (the original's protobuf text format)."""

from __future__ import annotations

import re
import uuid as uuidlib
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

from tests.conftest import Daemon, DaemonFactory, cli

pytestmark = pytest.mark.host

UUID_RE = re.compile(r'container_uuids: "([0-9a-f-]{36})"')
BUSYBOX_OS = (
    'name: "busybox"\nhardware: "x86"\nversion: 3\ndescription { en: "demo" }\n'
    'mounts { image_file: "root" mount_point: "/" fs_type: "squashfs" mount_type: SHARED }\n'
)


def write_conf(tmp: Path, name: str, extra: str = "") -> Path:
    p = tmp / f"{name}.conf"
    p.write_text(f'name: "{name}"\nguest_os: "busybox"\n{extra}')
    return p


def create(d: Daemon, tmp: Path, name: str, extra: str = "") -> str:
    r = cli(d.socket, "create", str(write_conf(tmp, name, extra)))
    assert r.rc == 0, r.err
    m = UUID_RE.search(r.out)
    assert m, r.out
    return m.group(1)


def make_ca(tmp: Path, ca: bool = True) -> Path:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(x509.NameOID.COMMON_NAME, "test CA")])
    import datetime

    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
        .serial_number(x509.random_serial_number()).not_valid_before(now)
        .not_valid_after(now + datetime.timedelta(days=30))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    p = tmp / ("ca.pem" if ca else "leaf.pem")
    p.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return p


@pytest.mark.req("APS 05", "CR 7.6 (1)")
def test_list_empty_and_create_state_config(cmld: Daemon, tmp_path: Path) -> None:
    r = cli(cmld.socket, "list")
    assert r.rc == 0 and r.out == "code: CONTAINER_STATUS\n"
    uuid = create(cmld, tmp_path, "alpha", "color: 0xff00ffff\nram_limit: 256\n")
    assert (cmld.base / "containers" / f"{uuid}.conf").read_text().startswith('name: "alpha"')
    r = cli(cmld.socket, "list")
    for line in (f'uuid: "{uuid}"', 'name: "alpha"', "type: CONTAINER", "state: STOPPED", "uptime: 0",
                 'guestos: "busybox"', "trust_level: UNSIGNED", "cryptfs_mode: NOT_IMPLEMENTED"):
        assert line in r.out
    assert re.search(r"created: \d{10}", r.out)
    # by name and by UUID, case-insensitive command
    assert cli(cmld.socket, "STATE", "alpha").out == cli(cmld.socket, "state", uuid).out
    r = cli(cmld.socket, "config", "alpha")
    assert "code: CONTAINER_CONFIG" in r.out and "ram_limit: 256" in r.out and "color: 4278255615" in r.out
    r = cli(cmld.socket, "--json", "state", "alpha")
    assert '"state": "STOPPED"' in r.out


def test_create_refusals(cmld: Daemon, tmp_path: Path) -> None:
    create(cmld, tmp_path, "dup")
    r = cli(cmld.socket, "create", str(write_conf(tmp_path, "dup")))
    assert r.rc == 1 and r.out == "code: CONTAINER_CONFIG\nerror_message: \"a container named \\\'dup\\\' exists\"\n"
    assert "a container named 'dup' exists" in cmld.log_text()
    bad = tmp_path / "bad.conf"
    bad.write_text('name: "x"\nnot_a_field: 3\n')
    r = cli(cmld.socket, "create", str(bad))
    assert r.rc == 1 and "container_configs" not in r.out
    assert cli(cmld.socket, "create", str(tmp_path / "missing.conf")).rc == 1
    # a signature without its certificate is sent alone, as the original does; a device without
    # signed configs does not look at it
    assert cli(cmld.socket, "create", str(write_conf(tmp_path, "y")), str(bad)).rc == 0


@pytest.mark.req("NDR 2.4", "NDR 3.2")
def test_signed_configs_required_refuses_unsigned(cmld_factory: DaemonFactory, tmp_path: Path) -> None:
    d = cmld_factory.start(device_conf="hostedmode: true\ntpm_enabled: false\n")
    r = cli(d.socket, "create", str(write_conf(tmp_path, "x")))
    assert r.rc == 1 and r.out.startswith("code: CONTAINER_CONFIG\nerror_message: ") and "uuids" not in r.out
    assert "requires signed configs" in d.log_text()
    assert not list((d.base / "containers").glob("*.conf"))


@pytest.mark.req("NDR 3.10")
def test_update_config_reload_remove(cmld: Daemon, tmp_path: Path) -> None:
    uuid = create(cmld, tmp_path, "beta")
    new = write_conf(tmp_path, "beta2", "ram_limit: 512\n")
    r = cli(cmld.socket, "update_config", "beta", str(new))
    assert r.rc == 0 and 'name: "beta2"' in r.out and f'container_uuids: "{uuid}"' in r.out
    assert 'name: "beta2"' in cli(cmld.socket, "list").out
    # an edit on disk shows up after reload
    conf = cmld.base / "containers" / f"{uuid}.conf"
    conf.write_text('name: "gamma"\nguest_os: "busybox"\n')
    r = cli(cmld.socket, "reload")
    assert r.out == "code: RESPONSE\nresponse: CMD_OK\n"
    assert 'name: "gamma"' in cli(cmld.socket, "list").out
    r = cli(cmld.socket, "remove", "gamma")
    assert r.rc == 0 and "response: CMD_OK" in r.out
    assert not conf.exists() and not conf.with_suffix(".created").exists()
    assert cli(cmld.socket, "list").out == "code: CONTAINER_STATUS\n"
    r = cli(cmld.socket, "remove", "gamma")
    assert r.rc == 1 and "does not exist" in r.err


def test_lifecycle_commands_on_a_stopped_container(cmld: Daemon, tmp_path: Path) -> None:
    create(cmld, tmp_path, "life", "usb_pin_entry: false\n")
    expect = {
        ("start", "life", "--key", "trustme"): "CONTAINER_START_EINTERNAL",  # its GuestOS is not installed
        ("start", "life", "--key=trustme", "--setup"): "CONTAINER_START_EINTERNAL",
        ("stop", "life", "-k", "trustme"): "CONTAINER_STOP_FAILED_NOT_RUNNING",
        ("freeze", "life"): "CMD_FAILED",
        ("unfreeze", "life"): "CMD_FAILED",
        ("snapshot", "life"): "CMD_UNSUPPORTED",
        ("allow_audio", "life"): "CMD_UNSUPPORTED",
        ("deny_audio", "life"): "CMD_UNSUPPORTED",
        ("assign_iface", "life", "--iface", "eth1"): "CMD_FAILED",  # not running: no namespace to move it to
        ("unassign_iface", "life", "--iface=eth1", "--persistent"): "CMD_FAILED",
        ("dev_access", "life", "c 4:1 rwm"): "CMD_FAILED",
        ("dev_access", "life", "nonsense"): "CMD_FAILED",
    }
    for args, response in expect.items():
        r = cli(cmld.socket, *args)
        assert r.out.startswith(f"code: RESPONSE\nresponse: {response}\n"), (args, r.out, r.err)
        assert r.rc == 1, args
    # a container that is not running has no interfaces: an empty list, as the original answers
    r = cli(cmld.socket, "ifaces", "life")
    assert r.out == "code: CONTAINER_IFACES\n" and r.rc == 0, (r.out, r.err)
    r = cli(cmld.socket, "start", "life", "--key", "trustme")
    assert "error_message: \"GuestOS \\'busybox\\' is not installed\"" in r.out, r.out
    assert "malformed device rule 'nonsense'" in cmld.log_text()
    # the PIN prompt reads stdin when it is not a terminal
    r = cli(cmld.socket, "start", "life", stdin="trustme\n")
    assert "Password: " in r.err and "CONTAINER_START_EINTERNAL" in r.out


def test_wipe_keeps_markers(cmld: Daemon, tmp_path: Path) -> None:
    uuid = create(cmld, tmp_path, "wipeme")
    cdir = cmld.base / "containers" / uuid
    cdir.mkdir()
    for name in ("data.img", "data.meta.img", "not-stacked", "token_is_paired"):
        (cdir / name).write_bytes(b"x")
    key = cmld.base / "keys" / f"{uuid}.key"
    key.write_bytes(b"k" * 96)
    r = cli(cmld.socket, "wipe", "wipeme")
    assert r.out == "code: RESPONSE\nresponse: CMD_OK\n"
    assert sorted(p.name for p in cdir.iterdir()) == ["not-stacked", "token_is_paired"]
    assert not key.exists()


def test_run_reports_why_it_cannot(cmld: Daemon, tmp_path: Path) -> None:
    create(cmld, tmp_path, "runner")
    r = cli(cmld.socket, "run", "runner", "echo", "hi")
    assert r.rc == 1 and "container is not running (state STOPPED)" in r.err
    r = cli(cmld.socket, "run", "runner", "nopty", "ls", "-l")
    assert r.rc == 1 and "not running" in r.err
    assert cli(cmld.socket, "run", "runner").rc == 2


@pytest.mark.req("CR 1.5")
def test_change_pin_prompts_and_checks(cmld: Daemon, tmp_path: Path) -> None:
    create(cmld, tmp_path, "pin")
    r = cli(cmld.socket, "change_pin", "pin", stdin="trustme\nnew\nother\n")
    assert r.rc == 1 and "Passwords don't match!" in r.err and r.out == ""
    r = cli(cmld.socket, "change_pin", "pin", stdin="trustme\n1234\n1234\n")
    assert "Current Password: " in r.err and "New Password: " in r.err and "Re-enter New Password: " in r.err
    # no scd in this test: a clear failure naming it
    assert r.out.startswith("code: RESPONSE\nresponse: CONTAINER_CHANGE_PIN_FAILED\n") and "scd" in r.out, r.out


def test_global_commands(cmld: Daemon, tmp_path: Path) -> None:
    r = cli(cmld.socket, "device_stats")
    assert r.rc == 0 and "code: DEVICE_STATS" in r.out
    for f in ("disk_system:", "disk_system_free:", "disk_system_used:", "mem_total:", "mem_available:"):
        assert f in r.out
    assert cli(cmld.socket, "list_guestos").out == "code: GUESTOS_CONFIGS_LIST\n"
    assert cli(cmld.socket, "reboot").out == "code: RESPONSE\nresponse: CMD_OK\n"
    assert cli(cmld.socket, "destroy_system").out == "code: RESPONSE\nresponse: CMD_UNSUPPORTED\n"
    r = cli(cmld.socket, "pull_csr", str(tmp_path / "csr.pem"))
    assert r.rc == 1 and "DEVICE_CSR_ERROR" in r.err and "cannot connect to scd" in r.err, r.err
    assert not (tmp_path / "csr.pem").exists()
    junk = tmp_path / "junk.pem"
    junk.write_text("not a cert")
    assert "DEVICE_CERT_ERROR" in cli(cmld.socket, "push_cert", str(junk)).out
    r = cli(cmld.socket, "push_guestos_config", str(junk), str(junk), str(junk))
    assert r.out.startswith("code: RESPONSE\nresponse: GUESTOS_MGR_INSTALL_FAILED\n") and r.rc == 1


@pytest.mark.req("CR 7.6 (1)")
def test_guestos_listing_and_removal(cmld_factory: DaemonFactory, tmp_path: Path) -> None:
    base = tmp_path / "gbase"
    (base / "operatingsystems" / "busybox-3").mkdir(parents=True)
    (base / "operatingsystems" / "busybox-3.conf").write_text(BUSYBOX_OS)
    (base / "operatingsystems" / "busybox-2.conf").write_text(BUSYBOX_OS.replace("version: 3", "version: 2"))
    (base / "operatingsystems" / "other-1.conf").write_text(
        BUSYBOX_OS.replace('"busybox"', '"other"').replace("version: 3", "version: 1"))
    d = cmld_factory.start(base=base)
    r = cli(d.socket, "list_guestos")
    assert r.out.count("guestos_configs {") == 2 and "version: 3" in r.out and "version: 2" not in r.out
    create(d, tmp_path, "user")  # uses busybox
    r = cli(d.socket, "remove_guestos", "busybox")
    assert r.out == "code: RESPONSE\nresponse: CMD_FAILED\n" and "is in use" in d.log_text()
    assert cli(d.socket, "remove_guestos", "other").out == "code: RESPONSE\nresponse: CMD_OK\n"
    assert not (base / "operatingsystems" / "other-1.conf").exists()
    assert cli(d.socket, "remove_guestos", "nosuch").out == "code: RESPONSE\nresponse: CMD_FAILED\n"
    assert 'trust_level: UNSIGNED' in cli(d.socket, "list").out


@pytest.mark.req("OS 03", "NDR 3.13")
def test_ca_register(cmld: Daemon, tmp_path: Path) -> None:
    ca = make_ca(tmp_path)
    r = cli(cmld.socket, "ca_register", str(ca))
    assert r.out == "code: RESPONSE\nresponse: GUESTOS_MGR_REGISTER_CA_OK\n" and r.rc == 0
    stored = list((cmld.base / "tokens" / "ca").iterdir())
    assert len(stored) == 1 and stored[0].read_bytes() == ca.read_bytes()
    assert len(stored[0].name) == 40  # sha1 hex of the PEM
    assert cli(cmld.socket, "ca_register", str(ca)).rc == 0  # again: still OK, one file
    assert len(list((cmld.base / "tokens" / "ca").iterdir())) == 1
    leaf = make_ca(tmp_path, ca=False)
    r = cli(cmld.socket, "ca_register", str(leaf))
    assert r.out == "code: RESPONSE\nresponse: GUESTOS_MGR_REGISTER_CA_ERROR\n" and r.rc == 1
    assert "not a CA" in cmld.log_text()


@pytest.mark.req("CR 2.1", "CR 2.1 (1)")
def test_provisioning_restricts_commands(cmld: Daemon, tmp_path: Path) -> None:
    uuid = create(cmld, tmp_path, "prov")
    assert "device_is_provisioned: false" in cli(cmld.socket, "get_provisioned").out
    assert cli(cmld.socket, "set_provisioned").out == "code: RESPONSE\nresponse: CMD_OK\n"
    assert "device_is_provisioned: true" in cli(cmld.socket, "get_provisioned").out
    assert (cmld.base / "_cml_provisioned_").exists()
    refused = [("set_provisioned",), ("remove", "prov"), ("wipe", "prov"), ("reload",), ("wipe_device",),
               ("ca_register", str(make_ca(tmp_path))), ("freeze", "prov"), ("run", "prov", "ls")]
    for args in refused:
        r = cli(cmld.socket, *args)
        if args[0] == "run":
            assert r.rc == 1 and "CMD_UNSUPPORTED" in r.err
        else:
            assert r.out == "code: RESPONSE\nresponse: CMD_UNSUPPORTED\n", args
    assert "refused: the device is provisioned" in cmld.log_text()
    # the allowed subset still works
    assert f'uuid: "{uuid}"' in cli(cmld.socket, "list").out
    assert "code: CONTAINER_CONFIG" in cli(cmld.socket, "config", "prov").out
    assert "CONTAINER_STOP_FAILED_NOT_RUNNING" in cli(cmld.socket, "stop", "prov", "--key=x").out
    assert (cmld.base / "containers" / f"{uuid}.conf").exists()


def test_provisioned_state_survives_restart(cmld_factory: DaemonFactory) -> None:
    d = cmld_factory.start()
    cli(d.socket, "set_provisioned")
    d.stop()
    d2 = cmld_factory.start(base=d.base, name="again")
    assert "device_is_provisioned: true" in cli(d2.socket, "get_provisioned").out
    assert "CMD_UNSUPPORTED" in cli(d2.socket, "set_provisioned").out


def test_retrieve_logs(cmld: Daemon, tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    r = cli(cmld.socket, "retrieve_logs", str(out))
    assert r.out == "code: RESPONSE\nresponse: CMD_OK\n"
    files = list(out.iterdir())
    assert len(files) == 1 and files[0].name.startswith("cml-daemon.")
    assert "cmld ready" in files[0].read_text()
    assert cli(cmld.socket, "retrieve_logs", str(tmp_path / "nodir")).rc == 2
    # an old log is removed with --remove, the current one is kept
    old = cmld.log_dir / "cml-daemon.2000-01-01T00:00:00.000000+0000"
    old.write_text("old\n")
    r = cli(cmld.socket, "retrieve_logs", str(out), "--remove")
    assert r.rc == 0 and (out / old.name).read_text() == "old\n"
    assert not old.exists() and (cmld.log_dir / "cml-daemon.current").exists()


@pytest.mark.req("CR 4.2", "CR 4.2 (2)")
def test_wipe_device_hosted(cmld: Daemon, tmp_path: Path) -> None:
    create(cmld, tmp_path, "w1")
    (cmld.base / "tokens").mkdir(exist_ok=True)
    (cmld.base / "tokens" / "x.p12").write_bytes(b"p12")
    assert cli(cmld.socket, "wipe_device").out == "code: RESPONSE\nresponse: CMD_OK\n"
    assert cli(cmld.socket, "list").out == "code: CONTAINER_STATUS\n"
    assert not (cmld.base / "tokens").exists()
    assert list((cmld.base / "containers").iterdir()) == []
    assert cli(cmld.socket, "list").rc == 0  # still serving


def test_unknown_container_and_unreachable_socket(cmld: Daemon, tmp_path: Path) -> None:
    r = cli(cmld.socket, "start", str(uuidlib.uuid4()), "--key=x")
    assert r.rc == 1 and "Container with provided uuid/name does not exist!" in r.err
    r = cli(tmp_path / "nope.sock", "list")
    assert r.rc == 3 and "no control socket" in r.err
    assert cli(cmld.socket, "frobnicate").rc == 2
