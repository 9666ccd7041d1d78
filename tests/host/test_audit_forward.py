"""Forwarding to a real rsyslogd over TLS (RFC 5425 octet counting, RFC 5424 messages): every
journal entry arrives once, in order, also those written while the collector was away; a
collector with a certificate the device does not trust gets nothing; a forwarding config
without a CA is refused with a record."""

from __future__ import annotations

import shutil
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from ..conftest import HOSTED_DEVICE_CONF, Daemon, DaemonFactory, cli, is_root
from .auditlib import journal_entries, of_type
from .scdlib import scd_and_cmld
from .syslogd import RSYSLOGD, Collector, free_port, make_tls

pytestmark = [pytest.mark.host, pytest.mark.skipif(not is_root(), reason="needs root"),
              pytest.mark.skipif(not RSYSLOGD.exists(), reason="rsyslog (and rsyslog-gnutls) not installed")]


def forward_conf(port: int, ca: Path, name: str = "collector.test") -> str:
    return (HOSTED_DEVICE_CONF + "audit_size: 1\naudit_checkpoint_seconds: 1\n"
            f'audit_forward_host: "127.0.0.1"\naudit_forward_port: {port}\naudit_forward_ca: "{ca}"\n'
            f'audit_forward_server_name: "{name}"\n')


@pytest.fixture
def collector(tmp_path: Path, cmld_factory: DaemonFactory) -> Iterator[tuple[Collector, Path]]:
    """rsyslogd on the loopback of the network namespace the test's cmld runs in."""
    tls = make_tls(tmp_path / "tls")
    c = Collector(tmp_path / "collector", tls, free_port(), cmld_factory.cmld_netns().name)
    c.work.mkdir(parents=True, exist_ok=True)
    c.start()
    try:
        yield c, tls[0]
    finally:
        c.stop()


def wait_for(pred: object, timeout: float = 45) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():  # type: ignore[operator]
            return True
        time.sleep(0.2)
    return False


def head(d: Daemon) -> int:
    return int(journal_entries(d)[-1]["seq"])


@pytest.mark.req("TSF Audit", "CR 6.2", "CR 3.4 (2)")
def test_forwarded_once_in_order_across_an_outage(cmld_factory: DaemonFactory,
                                                  collector: tuple[Collector, Path]) -> None:
    c, ca = collector
    _, d = scd_and_cmld(cmld_factory, device_conf=forward_conf(c.port, ca))  # scd signs the checkpoints
    for _ in range(3):
        assert cli(d.socket, "list").rc == 0
    # head() adds an AUDIT_READ record itself; the forwarder catches up with it too
    assert wait_for(lambda: c.seqs() and max(c.seqs()) >= head(d) - 1), c.lines()
    # the collector goes away; cmld keeps recording
    c.stop()
    for _ in range(10):
        assert cli(d.socket, "list").rc == 0
    assert d.alive()
    during = head(d)
    c.start()
    assert wait_for(lambda: c.seqs() and max(c.seqs()) >= during), (c.seqs(), during)
    seqs = c.seqs()
    assert sorted(set(seqs)) == list(range(1, max(seqs) + 1))  # nothing lost
    assert len(seqs) == len(set(seqs))  # nothing twice
    assert seqs == sorted(seqs)  # in journal order
    # the messages are RFC 5424 with the journal's hash, checkpoints included
    entries = {e["seq"]: e for e in journal_entries(d)}
    line = next(x for x in c.lines() if 'seq="1"' in x)
    assert line.startswith("<109>1 ") and " cmld - SSA.CMLD.GENERIC.cmld-start " in line, line
    assert f'hash="{entries[1]["hash"]}"' in line
    assert any(" cmld - checkpoint [cml@32473 " in x for x in c.lines())
    fails = [x for x in c.lines() if "get-container-status" in x]
    assert fails and all(x.startswith("<109>1 ") for x in fails)  # notice for successes


def test_untrusted_collector_gets_nothing(cmld_factory: DaemonFactory, collector: tuple[Collector, Path],
                                          tmp_path: Path) -> None:
    c, _ = collector
    other_ca = make_tls(tmp_path / "other")[0]
    d = cmld_factory.start(device_conf=forward_conf(c.port, other_ca))
    assert cli(d.socket, "list").rc == 0
    assert wait_for(lambda: "certificate verify failed" in d.log_text(), 15), d.log_text()[-2000:]
    assert c.seqs() == []
    # the wrong name in the collector's certificate is refused as well
    e = cmld_factory.start(device_conf=forward_conf(c.port, collector[1], name="someone.else"), name="cmld2")
    assert wait_for(lambda: "certificate verify failed" in e.log_text(), 15), e.log_text()[-2000:]
    assert c.seqs() == []


def test_forwarding_without_a_ca_is_refused(cmld_factory: DaemonFactory, tmp_path: Path) -> None:
    conf = HOSTED_DEVICE_CONF + 'audit_size: 1\naudit_forward_host: "127.0.0.1"\n'
    d = cmld_factory.start(device_conf=conf)
    (bad,) = of_type(journal_entries(d), "FSA.CMLD.GENERIC.audit-forwarding-misconfigured")
    assert "audit_forward_ca" in bad["meta"]["error"]
    assert cli(d.socket, "list").rc == 0 and d.alive()
    shutil.rmtree(tmp_path / "nothing", ignore_errors=True)
