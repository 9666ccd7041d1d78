"""Journeys J4 (sign, create, start), J7 (register a CA) and J8 (CSR, certificate, provisioned)
end to end: `cml-sign` and `cml-control` against the real cmld and scd on one base directory,
with the tampered, foreign and swapped inputs refused and nothing written for them."""

from __future__ import annotations

import socket
import subprocess
from pathlib import Path

import pytest

from ..conftest import BIN, Daemon, DaemonFactory, cli, is_root
from .containers import container_conf, state, wait_state
from .scdlib import SIGNED_DEVICE_CONF, make_pki, scd_and_cmld, sign

pytestmark = [pytest.mark.host, pytest.mark.skipif(not is_root(), reason="needs root")]



@pytest.fixture(scope="module")
def pkis(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """The device's PKI, and a second one whose root the device does not know (yet)."""
    root = tmp_path_factory.mktemp("pkis")
    return make_pki(root / "device", "ec256"), make_pki(root / "other", "ec256")


def daemons(factory: DaemonFactory, src: Path, pki: Path) -> tuple[Daemon, Daemon]:
    return scd_and_cmld(factory, pki=pki, guestos=src, device_conf=SIGNED_DEVICE_CONF)


def container_files(base: Path) -> set[str]:
    return {p.name for p in (base / "containers").iterdir()} if (base / "containers").exists() else set()


@pytest.mark.req("TSF Secure Container Init", "TSF Updates", "COM 06", "APS 01", "NDR 3.2", "NDR 3.10 (1)")
def test_signed_container_configs_j4_j7(cmld_factory: DaemonFactory, guestos_src: Path,
                                        pkis: tuple[Path, Path]) -> None:
    pki, other = pkis
    _, d = daemons(cmld_factory, guestos_src, pki)
    base = d.base
    tmp = cmld_factory.tmp
    conf = tmp / "app.conf"
    conf.write_text(container_conf("app", guestos_version=1))
    sig, cert = sign(conf, pki)
    before = container_files(base)

    # unsigned, tampered (one byte), swapped certificate, foreign CA: all refused, nothing stored
    assert cli(d.socket, "create", str(conf)).rc != 0
    tampered = tmp / "tampered.conf"
    tampered.write_bytes(conf.read_bytes().replace(b'"app"', b'"apq"'))
    assert cli(d.socket, "create", str(tampered), str(sig), str(cert)).rc != 0
    other_conf = tmp / "other.conf"
    other_conf.write_text(container_conf("app", guestos_version=1))
    other_sig, other_cert = sign(other_conf, other)
    assert cli(d.socket, "create", str(conf), str(sig), str(other_cert)).rc != 0
    assert cli(d.socket, "create", str(other_conf), str(other_sig), str(other_cert)).rc != 0
    assert container_files(base) == before
    log = d.log_text()
    assert "BAD_SIGNATURE (the signature does not match the config bytes)" in log
    assert "BAD_CERTIFICATE" in log and "no signature and certificate" in log

    # J4: the signed config is accepted, stored with its signature, and the container runs
    r = cli(d.socket, "create", str(conf), str(sig), str(cert))
    assert r.rc == 0, r.out + r.err
    assert "config signature GOOD" in d.log_text()
    stored = [p for p in (base / "containers").glob("*.conf")]
    assert len(stored) == 1 and stored[0].read_bytes() == conf.read_bytes()
    assert stored[0].with_suffix(".sig").read_bytes() == sig.read_bytes()
    assert "CONTAINER_START_OK" in cli(d.socket, "start", "app").out
    wait_state(d, "app", "RUNNING")
    assert cli(d.socket, "stop", "app").rc == 0
    wait_state(d, "app", "STOPPED", timeout=15)

    # an update must be signed too; a tampered one leaves the stored config as it was
    new_conf = tmp / "app2.conf"
    new_conf.write_text(container_conf("app", guestos_version=1, ram_limit=96))
    new_sig, new_cert = sign(new_conf, pki)
    bad = tmp / "app2-bad.conf"
    bad.write_bytes(new_conf.read_bytes().replace(b"96", b"97"))
    assert cli(d.socket, "update_config", "app", str(bad), str(new_sig), str(new_cert)).rc != 0
    assert stored[0].read_bytes() == conf.read_bytes()
    assert cli(d.socket, "update_config", "app", str(new_conf), str(new_sig), str(new_cert)).rc == 0
    assert stored[0].read_bytes() == new_conf.read_bytes()

    # J7: once the other PKI's root is registered, its signatures count
    bad_ca = tmp / "not-a-ca.pem"
    bad_ca.write_bytes((other / "ssig_cml.cert").read_bytes())
    assert cli(d.socket, "ca_register", str(bad_ca)).rc != 0  # a leaf is not a CA
    r = cli(d.socket, "ca_register", str(other / "ssig_rootca.cert"))
    assert r.rc == 0 and "GUESTOS_MGR_REGISTER_CA_OK" in r.out, r.out + r.err
    other_conf.write_text(container_conf("app-other", guestos_version=1))
    other_sig, other_cert = sign(other_conf, other)
    r = cli(d.socket, "create", str(other_conf), str(other_sig), str(other_cert))
    assert r.rc == 0, r.out + r.err
    assert state(d, "app-other") == "STOPPED"


@pytest.mark.req("CR 1.2 (1)", "NDR 3.12")
def test_provisioning_j8(cmld_factory: DaemonFactory, guestos_src: Path, pkis: tuple[Path, Path]) -> None:
    pki, other = pkis
    scd, d = daemons(cmld_factory, guestos_src, pki)
    tmp = cmld_factory.tmp
    csr = tmp / "device.csr"
    r = cli(d.socket, "pull_csr", str(csr))
    assert r.rc == 0, r.out + r.err
    text = subprocess.run(["openssl", "req", "-in", str(csr), "-noout", "-text"], capture_output=True, text=True,
                          check=True).stdout
    device_uuid = (d.base / "tokens" / "device_id.conf").read_text().split('"')[1]
    assert f"URI:UUID:{device_uuid}" in text

    # a certificate for another key is refused; the one issued for this CSR is taken
    foreign_csr = tmp / "foreign.csr"
    subprocess.run(["openssl", "req", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
                    "-keyout", str(tmp / "foreign.key"), "-subj", "/CN=foreign", "-out", str(foreign_csr)],
                   check=True, capture_output=True)
    for request, out in ((foreign_csr, tmp / "foreign.cert"), (csr, tmp / "device.cert")):
        p = subprocess.run([str(BIN / "cml-sign"), "csr", str(request), "--ca-key", str(pki / "device_subca.key"),
                            "--ca-cert", str(pki / "device_subca.cert"), "-o", str(out)], capture_output=True,
                           text=True, check=False)
        assert p.returncode == 0, p.stderr
    r = cli(d.socket, "push_cert", str(tmp / "foreign.cert"))
    assert r.rc != 0 and "DEVICE_CERT_ERROR" in r.out, r.out
    not_pem = tmp / "garbage.cert"
    not_pem.write_bytes(b"\x00\x01garbage")
    assert "DEVICE_CERT_ERROR" in cli(d.socket, "push_cert", str(not_pem)).out
    r = cli(d.socket, "push_cert", str(tmp / "device.cert"))
    assert r.rc == 0 and "DEVICE_CERT_OK" in r.out, r.out + r.err
    assert (d.base / "tokens" / "device.cert").read_bytes() == (tmp / "device.cert").read_bytes()

    # provisioned: at once, persistently, with the restricted command set
    assert "device_is_provisioned: false" in cli(d.socket, "get_provisioned").out
    assert cli(d.socket, "set_provisioned").rc == 0
    assert "device_is_provisioned: true" in cli(d.socket, "get_provisioned").out
    assert "CMD_UNSUPPORTED" in cli(d.socket, "set_provisioned").out + cli(d.socket, "set_provisioned").err
    r = cli(d.socket, "push_cert", str(tmp / "device.cert"))
    assert "CMD_UNSUPPORTED" in r.out + r.err
    assert cli(d.socket, "list").rc == 0  # still allowed
    d.stop()
    scd.stop()
    scd = cmld_factory.launch("scd", "scd2", base=d.base, kind=socket.SOCK_SEQPACKET)
    d2 = cmld_factory.start("--scd-socket", str(scd.socket), base=d.base, name="cmld2",
                            device_conf=SIGNED_DEVICE_CONF)
    assert "device_is_provisioned: true" in cli(d2.socket, "get_provisioned").out
    assert "CMD_UNSUPPORTED" in cli(d2.socket, "pull_csr", str(tmp / "again.csr")).out + \
        cli(d2.socket, "pull_csr", str(tmp / "again.csr")).err
