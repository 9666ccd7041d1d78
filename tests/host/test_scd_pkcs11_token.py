"""PKCS#11 tokens through the real scd and a real SoftHSM2 token: pairing binds the on-token PIN
to the device, the KEK is generated on the token and is not extractable, wrap/unwrap on the token."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pkcs11
import pytest
from pkcs11 import Attribute, KeyType, ObjectClass
from pkcs11.exceptions import AttributeSensitive, PinIncorrect

from cml_common.messages.scd_pb2 import TokenType
from tests.conftest import Daemon, DaemonFactory
from tests.host.scdlib import SECRET, Q, T, launch_scd, new_uuid, prepare_base, request

pytestmark = pytest.mark.host
MODULE = Path("/usr/lib/softhsm/libsofthsm2.so")
LABEL = "scdtest"
P11 = TokenType.PKCS11


@pytest.fixture
def softhsm(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    if not MODULE.exists():
        pytest.skip("softhsm2 is not installed (scripts/setup.sh installs it)")
    tokdir = tmp_path / "softhsm-tokens"
    tokdir.mkdir()
    conf = tmp_path / "softhsm2.conf"
    conf.write_text(f"directories.tokendir = {tokdir}\nobjectstore.backend = file\nlog.level = ERROR\n")
    monkeypatch.setenv("SOFTHSM2_CONF", str(conf))  # inherited by scd and used by this process
    subprocess.run(["softhsm2-util", "--init-token", "--free", "--label", LABEL, "--so-pin", "56781234",
                    "--pin", "123456"], check=True, capture_output=True)
    return conf


@pytest.fixture
def scd(cmld_factory: DaemonFactory, tmp_path: Path, softhsm: Path) -> Daemon:
    return launch_scd(cmld_factory, prepare_base(tmp_path / "base", None), "--pkcs11-module", str(MODULE))


def q(code: int, uid: str, **kw: object) -> Q:
    return Q(code=code, token_type=P11, token_uuid=uid, usbtoken_serial=LABEL, **kw)  # type: ignore[arg-type]


def test_scd_pkcs11_token(scd: Daemon) -> None:
    uid = new_uuid()
    assert request(scd, Q(code=Q.TOKEN_ADD, token_type=P11, token_uuid=uid)).code == T.TOKEN_ADD_FAILED  # no label
    assert request(scd, Q(code=Q.TOKEN_ADD, token_type=P11, token_uuid=uid,
                          usbtoken_serial="nosuchtoken")).code == T.TOKEN_ADD_FAILED
    assert request(scd, q(Q.TOKEN_ADD, uid)).code == T.TOKEN_ADD_SUCCESSFUL
    assert request(scd, q(Q.UNLOCK, uid, token_pin="123456", pairing_secret=SECRET)).code == T.UNLOCK_FAILED
    r = request(scd, q(Q.PROVISION_PIN, uid, token_pin="000000", token_newpin="4242", pairing_secret=SECRET))
    assert r.code == T.PROVISION_PIN_FAILED
    r = request(scd, q(Q.PROVISION_PIN, uid, token_pin="123456", token_newpin="4242", pairing_secret=SECRET))
    assert r.code == T.PROVISION_PIN_SUCCESSFUL
    assert request(scd, q(Q.UNLOCK, uid, token_pin="4242", pairing_secret=SECRET)).code == T.UNLOCK_SUCCESSFUL
    key = os.urandom(96)
    r = request(scd, q(Q.WRAP_KEY, uid, container_uuid=uid, unwrapped_key=key))
    assert r.HasField("wrapped_key") and key not in r.wrapped_key
    blob = r.wrapped_key
    assert request(scd, q(Q.UNWRAP_KEY, uid, container_uuid=uid, wrapped_key=blob)).unwrapped_key == key
    bad = blob[:-1] + bytes([blob[-1] ^ 1])
    r = request(scd, q(Q.UNWRAP_KEY, uid, container_uuid=uid, wrapped_key=bad))
    assert r.HasField("unwrapped_key") and r.unwrapped_key == b""

    # On the token: the bare PIN no longer logs in (device-bound), the KEK is sensitive and
    # not extractable, and its value cannot be read.
    token = pkcs11.lib(str(MODULE)).get_token(token_label=LABEL)
    with pytest.raises(PinIncorrect):
        token.open(user_pin="4242")
    with token.open(user_pin=SECRET.hex() + "4242") as s:
        kek = s.get_key(object_class=ObjectClass.SECRET_KEY, key_type=KeyType.AES, label=f"cml-kek-{uid}")
        assert kek[Attribute.SENSITIVE] is True and kek[Attribute.EXTRACTABLE] is False
        assert kek[Attribute.NEVER_EXTRACTABLE] is True
        with pytest.raises(AttributeSensitive):
            kek[Attribute.VALUE]

    # PIN change, then lockout after three wrong PINs.
    r = request(scd, q(Q.CHANGE_PIN, uid, token_pin="4242", token_newpin="777777", pairing_secret=SECRET))
    assert r.code == T.CHANGE_PIN_SUCCESSFUL
    assert request(scd, q(Q.LOCK, uid)).code == T.LOCK_SUCCESSFUL
    r = request(scd, q(Q.UNWRAP_KEY, uid, container_uuid=uid, wrapped_key=blob))
    assert not r.HasField("unwrapped_key")
    for _ in range(3):
        assert request(scd, q(Q.UNLOCK, uid, token_pin="4242", pairing_secret=SECRET)).code == T.PASSWD_WRONG
    assert request(scd, q(Q.UNLOCK, uid, token_pin="777777", pairing_secret=SECRET)).code == T.LOCKED_TILL_REBOOT
    assert "777777" not in scd.log_text() and "4242" not in scd.log_text()


def test_scd_pkcs11_type_needs_module(cmld_factory: DaemonFactory, tmp_path: Path) -> None:
    scd = launch_scd(cmld_factory, prepare_base(tmp_path / "base", None))
    assert request(scd, q(Q.TOKEN_ADD, new_uuid())).code == T.TOKEN_ADD_FAILED
    assert "not supported" in scd.log_text()
