"""`control`'s log lines where the original logs them, with a real scd behind cmld: the device CSR
written to a file (`device csr written to <f>`), and a signed GuestOS pushed
(`Pushing cfg ...`, `Waiting for images to be transfered ...`, then the final reply)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from ..conftest import DaemonFactory, is_root
from .scdlib import SIGNED_DEVICE_CONF, make_pki, scd_and_cmld
from .test_cli_compat import run
from .test_guestos_push import publish

pytestmark = [pytest.mark.host, pytest.mark.skipif(not is_root(), reason="needs root")]


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_pki(tmp_path_factory.mktemp("pki") / "pki", "ec256")


def test_csr_and_push_logs(cmld_factory: DaemonFactory, guestos_src: Path, pki: Path) -> None:
    _, d = scd_and_cmld(cmld_factory, pki=pki, device_conf=SIGNED_DEVICE_CONF)
    tmp = cmld_factory.tmp
    csr = tmp / "device.csr"
    r = run("control", d.socket, "pull_csr", str(csr))
    assert r.rc == 0 and r.out == "", r.err
    assert re.search(rf"^\[\d+\] <INFO>  device csr written to {re.escape(str(csr))}$", r.err, re.M), r.err
    assert csr.read_bytes().startswith(b"-----BEGIN CERTIFICATE REQUEST-----")
    r = run("cml-control", d.socket, "pull_csr", str(tmp / "again.csr"))
    assert r.rc == 0 and r.err == f"cml-control: device csr written to {tmp / 'again.csr'}\n"
    r = run("cml-control", d.socket, "pull_csr", str(tmp / "no-such-dir" / "x.csr"))
    assert r.rc == 1 and "cannot write" in r.err

    repo = tmp / "repo"
    conf = publish(guestos_src, repo, pki, tmp, version=2, url=f"file://{repo}")
    sig, cert = conf.with_suffix(".sig"), conf.with_suffix(".cert")
    r = run("control", d.socket, "push_guestos_config", str(conf), str(sig), str(cert))
    assert r.rc == 0 and r.out == "code: RESPONSE\nresponse: GUESTOS_MGR_INSTALL_COMPLETED\n", r.out + r.err
    sizes = [p.stat().st_size for p in (conf, sig, cert)]
    assert (f"<INFO>  Pushing cfg {conf} (len {sizes[0]}), sig {sig} (len {sizes[1]}), and cert {cert} "
            f"(len {sizes[2]}).") in r.err
    assert re.search(r"^\[\d+\] <INFO>  Waiting for images to be transfered \.\.\.$", r.err, re.M), r.err
    assert 'name: "pushos"' in run("control", d.socket, "list_guestos").out
