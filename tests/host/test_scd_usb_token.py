"""USB token (SmartCard-HSM) through the real scd, the real pcscd with the vpcd driver in a private
net+mount namespace, and a card emulator speaking the vpcd protocol: pairing, auth code = pairing
secret ‖ PIN, key derivation on the card with RFC 3394 wrapping, and TOKEN_SE_REMOVED on removal."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from cml_common import framing
from cml_common.messages.scd_pb2 import TokenType
from tests.conftest import Daemon, DaemonFactory
from tests.host.pcsc_ns import PcscNamespace, available
from tests.host.scdlib import SECRET, Q, T, launch_scd, new_uuid, prepare_base, request

pytestmark = pytest.mark.host
READER = "Virtual PCD 00 00"
USB = TokenType.USB


@pytest.fixture
def pcsc(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[PcscNamespace]:
    why = available()
    if why:
        pytest.skip(why)
    ns = PcscNamespace(tmp_path / "pcsc")
    try:
        ns.start()
        monkeypatch.setenv("PCSCLITE_CSOCK_NAME", str(ns.socket))
        yield ns
    finally:
        ns.stop()


def wait_for_card(ns: PcscNamespace) -> None:
    """Until pcscd answers, lists the virtual reader and sees its card. In a fresh process each
    time: libpcsclite keeps the daemon socket of its first context for the life of the process,
    so a test process that talked to an earlier test's pcscd gets "Service not available" here."""
    probe = (
        "import sys, time\n"
        "from smartcard.System import readers\n"
        "deadline = time.monotonic() + 30\n"
        "last = ''\n"
        "while time.monotonic() < deadline:\n"
        "    try:\n"
        "        r = next((r for r in readers() if sys.argv[1] in str(r)), None)\n"
        "        if r is not None:\n"
        "            c = r.createConnection(); c.connect(); c.disconnect(); sys.exit(0)\n"
        "        last = 'no virtual reader listed yet'\n"
        "    except Exception as e:\n"
        "        last = str(e)\n"
        "    time.sleep(0.05)\n"
        "print(last); sys.exit(1)\n"
    )
    env = dict(os.environ, PCSCLITE_CSOCK_NAME=str(ns.socket))
    p = subprocess.run([sys.executable, "-c", probe, READER], capture_output=True, text=True, env=env,
                       timeout=60, check=False)
    if p.returncode != 0:
        raise TimeoutError(f"pcscd did not see the card: {p.stdout.strip()} {p.stderr.strip()[-500:]}")


@pytest.fixture
def scd(cmld_factory: DaemonFactory, tmp_path: Path, pcsc: PcscNamespace) -> Daemon:
    return launch_scd(cmld_factory, prepare_base(tmp_path / "base", None), "--se-watchdog-interval", "0.2")


def q(code: int, uid: str, **kw: object) -> Q:
    return Q(code=code, token_type=USB, token_uuid=uid, usbtoken_serial=READER, **kw)  # type: ignore[arg-type]


@pytest.mark.req("TSF Container Data Storage")
def test_scd_usb_token(scd: Daemon, pcsc: PcscNamespace) -> None:
    card = pcsc.insert_card(transport_pin="648219")
    wait_for_card(pcsc)
    uid = new_uuid()
    r = request(scd, Q(code=Q.TOKEN_ADD, token_type=USB, token_uuid=uid, usbtoken_serial="no such reader"))
    assert r.code == T.TOKEN_ADD_FAILED
    assert request(scd, q(Q.TOKEN_ADD, uid)).code == T.TOKEN_ADD_SUCCESSFUL

    # Pairing: transport PIN -> pairing secret ‖ user PIN, master key generated on the card.
    r = request(scd, q(Q.PROVISION_PIN, uid, token_pin="648219", token_newpin="1234", pairing_secret=SECRET))
    assert r.code == T.PROVISION_PIN_SUCCESSFUL
    # The card now wants the auth code: the bare transport PIN and another device's secret fail.
    assert request(scd, q(Q.UNLOCK, uid, token_pin="1234", pairing_secret=b"\xff" * 8)).code == T.PASSWD_WRONG
    assert request(scd, q(Q.UNLOCK, uid, token_pin="1234", pairing_secret=SECRET)).code == T.UNLOCK_SUCCESSFUL
    # Auth code longer than 16 bytes: refused before reaching the card, not counted.
    r = request(scd, q(Q.UNLOCK, uid, token_pin="123456789", pairing_secret=SECRET))
    assert r.code == T.UNLOCK_FAILED

    key = os.urandom(96)
    assert request(scd, q(Q.UNLOCK, uid, token_pin="1234", pairing_secret=SECRET)).code == T.UNLOCK_SUCCESSFUL
    r = request(scd, q(Q.WRAP_KEY, uid, container_uuid=uid, unwrapped_key=key))
    assert r.HasField("wrapped_key") and len(r.wrapped_key) == 104  # RFC 3394: key + 8 bytes, as the original
    blob = r.wrapped_key
    assert request(scd, q(Q.UNWRAP_KEY, uid, container_uuid=uid, wrapped_key=blob)).unwrapped_key == key
    # The KEK depends on the label (container UUID): another label does not unwrap.
    r = request(scd, q(Q.UNWRAP_KEY, uid, container_uuid=new_uuid(), wrapped_key=blob))
    assert r.HasField("unwrapped_key") and r.unwrapped_key == b""
    r = request(scd, q(Q.UNWRAP_KEY, uid, container_uuid=uid, wrapped_key=blob[:-8]))
    assert r.unwrapped_key == b""

    r = request(scd, q(Q.CHANGE_PIN, uid, token_pin="1234", token_newpin="5678", pairing_secret=SECRET))
    assert r.code == T.CHANGE_PIN_SUCCESSFUL
    assert request(scd, q(Q.LOCK, uid)).code == T.LOCK_SUCCESSFUL
    assert not request(scd, q(Q.UNWRAP_KEY, uid, container_uuid=uid, wrapped_key=blob)).HasField("unwrapped_key")
    assert request(scd, q(Q.UNLOCK, uid, token_pin="5678", pairing_secret=SECRET)).code == T.UNLOCK_SUCCESSFUL
    assert request(scd, q(Q.UNWRAP_KEY, uid, container_uuid=uid, wrapped_key=blob)).unwrapped_key == key

    # Removal: the listener gets TOKEN_SE_REMOVED with the token UUID; the token is locked.
    with socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET) as listener:
        listener.settimeout(15)
        listener.connect(str(scd.socket))
        framing.send_seqpacket(listener, framing.serialize(Q(code=Q.REGISTER_EVENT_LISTENER)))
        assert framing.parse(T, framing.recv_seqpacket(listener) or b"").code == T.REGISTER_EVENT_LISTENER_OK
        pcsc.remove_card(card)
        event = framing.parse(T, framing.recv_seqpacket(listener) or b"")
    assert event.code == T.TOKEN_SE_REMOVED and event.token_uuid == uid
    assert not request(scd, q(Q.WRAP_KEY, uid, container_uuid=uid, unwrapped_key=key)).HasField("wrapped_key")
    for pin in ("648219", "1234", "5678"):
        assert pin not in scd.log_text()
