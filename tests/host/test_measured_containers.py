"""cmld measures what it starts (`tpm_enabled: true`): every GuestOS image of a container is hashed
from the bytes on disk and appended to tpm2d's measurement list (PCR 11) before the container
runs; `cml-rattestation` then attests the device and matches the measured images against the
signed GuestOS config. Without tpm2d a measured device refuses to start the container."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from tests.conftest import DaemonFactory, cli, is_root
from tests.host import tpm2dlib
from tests.host.containers import container_conf, install_guestos, start, wait_state
from tests.host.scdlib import make_pki, sign
from tests.host.swtpmlib import running_swtpm

pytestmark = [pytest.mark.host, pytest.mark.skipif(not is_root(), reason="needs root")]
MEASURED = "hostedmode: true\nsigned_configs: false\ntpm_enabled: true\n"


@pytest.mark.req("COM 04", "CR 3.4 (1)", "TSF Secure Container Init")
def test_a_started_container_is_measured_and_attested(cmld_factory: DaemonFactory, guestos_src: Path,
                                                      tmp_path: Path) -> None:
    base = cmld_factory.tmp / "cmld-base"
    install_guestos(guestos_src, base)
    images = sorted((base / "operatingsystems" / "busybox-1").glob("*.img"))
    digests = {str(img): hashlib.sha256(img.read_bytes()).digest() for img in images}
    ca = tpm2dlib.make_ca("CML test device CA")
    with running_swtpm() as tpm:
        t = tpm2dlib.launch(cmld_factory, tpm)
        tpm2dlib.certify_device(t, ca)
        with t.client() as c:
            pcr11_before = c.ml_list()
        d = cmld_factory.start("--tpm2d-socket", str(t.socket), "--stop-timeout", "10", base=base,
                               device_conf=MEASURED)
        conf = tmp_path / "m.conf"
        conf.write_text(container_conf("m"))
        assert cli(d.socket, "create", str(conf)).rc == 0
        assert start(d, "m").rc == 0
        wait_state(d, "m", "RUNNING")
        with t.client() as c:
            entries = c.ml_list()
        assert not pcr11_before
        assert {e.filename: bytes(e.data_hash) for e in entries} == digests
        assert "into PCR 11" in d.log_text()

        # a second start measures the same images again: the list does not grow (dedup)
        assert cli(d.socket, "stop", "m").rc == 0
        wait_state(d, "m", "STOPPED", timeout=20)
        assert start(d, "m").rc == 0
        wait_state(d, "m", "RUNNING")
        with t.client() as c:
            assert len(c.ml_list()) == len(digests)

        # attested from outside, and matched against the signed GuestOS config
        pki = make_pki(tmp_path / "pki", "ec256")
        refs = tmp_path / "guestos-refs"
        refs.mkdir()
        ref = refs / "busybox-1.conf"
        ref.write_bytes((base / "operatingsystems" / "busybox-1.conf").read_bytes())
        sign(ref, pki)
        (tmp_path / "guestos-ca.pem").write_bytes((pki / "ssig_rootca.cert").read_bytes())
        (tmp_path / "ca.pem").write_bytes(ca.pem())
        cfg = tpm2dlib.verifier_config(tmp_path / "rattestation.conf", ca_cert="ca.pem", verify_ima=False,
                                       guestos_dir="guestos-refs", guestos_ca="guestos-ca.pem")
        r = tpm2dlib.verify(t, cfg)
        lines = tpm2dlib.check_lines(r.stdout)
        assert r.returncode == 0, r.stdout
        assert lines["containers"].startswith("PASS") and lines["guestos images"].startswith("PASS")
        assert cli(d.socket, "stop", "m").rc == 0
        wait_state(d, "m", "STOPPED", timeout=20)
        t.daemon.stop()

        # tpm2d gone: a device that measures refuses to run an unmeasured container
        r = start(d, "m")
        assert r.rc == 1 and "CONTAINER_START_EINTERNAL" in r.out and "tpm2d did not measure" in r.out, r.out
        assert "STOPPED" in cli(d.socket, "state", "m").out
