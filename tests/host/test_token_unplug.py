"""Token unplug: cmld is scd's event listener; when the USB token of a running container is pulled
(here a virtual card in a virtual reader: the real pcscd with the vpcd driver in a private
namespace), scd's watchdog reports TOKEN_SE_REMOVED with the token's UUID and cmld stops that
container, and only that one (the original's token_detach)."""

from __future__ import annotations

import time
import uuid as uuidlib
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import DaemonFactory, cli, is_root
from tests.host.containers import create, install_guestos, start, state, uuid_of, wait_state
from tests.host.pcsc_ns import PcscNamespace, available
from tests.host.scdlib import launch_scd, prepare_base
from tests.host.test_scd_usb_token import READER, wait_for_card

pytestmark = [pytest.mark.host, pytest.mark.skipif(not is_root(), reason="needs root")]
TRANSPORT_PIN = "648219"


@pytest.fixture
def pcsc(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[PcscNamespace]:
    why = available()
    if why:
        pytest.skip(why)
    ns = PcscNamespace(tmp_path / "pcsc")
    try:
        ns.start()
        monkeypatch.setenv("PCSCLITE_CSOCK_NAME", str(ns.socket))  # scd (started below) inherits it
        yield ns
    finally:
        ns.stop()


def test_pulling_the_token_stops_its_container(cmld_factory: DaemonFactory, guestos_src: Path,
                                               pcsc: PcscNamespace) -> None:
    card = pcsc.insert_card(transport_pin=TRANSPORT_PIN)
    wait_for_card(pcsc)
    base = prepare_base(cmld_factory.tmp / "cmld-base", None)
    install_guestos(guestos_src, base)
    launch_scd(cmld_factory, base, "--se-watchdog-interval", "0.2")
    d = cmld_factory.start("--stop-timeout", "10", base=base)
    conf = cmld_factory.tmp / "tok-usb.conf"
    conf.write_text('name: "tok"\nguest_os: "busybox"\ncolor: 0\ntype: CONTAINER\ntoken_type: USB\nram_limit: 64\n'
                    f'usb_configs {{ id: "04e6:5816" serial: "{READER}" assign: true type: TOKEN }}\n')
    r = cli(d.socket, "create", str(conf))
    assert r.rc == 0, r.out + r.err
    create(d, cmld_factory.tmp, "bystander")
    try:
        # first use: pair the token (transport PIN -> the user's PIN), then start with it
        r = cli(d.socket, "change_pin", "tok", stdin=f"{TRANSPORT_PIN}\n1234\n1234\n")
        assert "CONTAINER_CHANGE_PIN_SUCCESSFUL" in r.out, r.out + r.err
        r = cli(d.socket, "start", "tok", "--key=1234")
        assert "CONTAINER_START_OK" in r.out, r.out + r.err + d.log_text()[-2000:]
        assert start(d, "bystander").rc == 0
        wait_state(d, "tok", "RUNNING")
        wait_state(d, "bystander", "RUNNING")
        uuid = uuid_of(d, "tok")
        assert "registered as scd's event listener" in d.log_text()

        pcsc.remove_card(card)
        t0 = time.monotonic()
        wait_state(d, "tok", "STOPPED", timeout=40)
        took = time.monotonic() - t0
        log = d.log_text()
        assert f"scd: token {uuid} removed: stopping its container" in log, log[-2000:]
        assert state(d, "bystander") == "RUNNING"
        print(f"token pulled -> container STOPPED in {took:.1f} s")
    finally:
        for n in ("tok", "bystander"):
            cli(d.socket, "stop", n)
    wait_state(d, "bystander", "STOPPED")
    assert uuidlib.UUID(uuid)
