"""Software tokens through the real scd over its real socket: PKCS#12 files checked with the
real openssl, pairing, PIN changes, lockout, wrap/unwrap, damaged files and blobs."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from tests.conftest import Daemon, DaemonFactory
from tests.host.scdlib import SECRET, Q, T, launch_scd, new_uuid, prepare_base, request

pytestmark = pytest.mark.host
KEY = os.urandom(96)


@pytest.fixture
def scd(cmld_factory: DaemonFactory, tmp_path: Path) -> Daemon:
    return launch_scd(cmld_factory, prepare_base(tmp_path / "base", None))


def p12_opens(path: Path, pin: str) -> bool:
    p = subprocess.run(["openssl", "pkcs12", "-in", str(path), "-noout", "-passin", f"pass:{pin}"],
                       capture_output=True, check=False)
    return p.returncode == 0


def add(d: Daemon, uid: str) -> None:
    assert request(d, Q(code=Q.TOKEN_ADD, token_uuid=uid)).code == T.TOKEN_ADD_SUCCESSFUL


def unlock(d: Daemon, uid: str, pin: str, secret: bytes = SECRET) -> int:
    return request(d, Q(code=Q.UNLOCK, token_uuid=uid, token_pin=pin, pairing_secret=secret)).code


def provision(d: Daemon, uid: str, old: str = "trustme", new: str = "1234") -> int:
    return request(d, Q(code=Q.PROVISION_PIN, token_uuid=uid, token_pin=old, token_newpin=new,
                        pairing_secret=SECRET)).code


def test_scd_soft_token_lifecycle(scd: Daemon) -> None:
    uid = new_uuid()
    p12 = scd.base / "tokens" / f"{uid}.p12"
    add(scd, uid)
    assert p12.exists() and p12_opens(p12, "trustme")  # a real PKCS#12 under the transport PIN
    before = p12.read_bytes()
    add(scd, uid)  # idempotent: the file is not recreated
    assert p12.read_bytes() == before

    # Not paired yet: even the transport PIN does not unlock (cmld says TOKEN_UNPAIRED).
    assert unlock(scd, uid, "trustme") == T.UNLOCK_FAILED
    assert provision(scd, uid, old="wrong") == T.PROVISION_PIN_FAILED
    assert provision(scd, uid) == T.PROVISION_PIN_SUCCESSFUL
    assert p12_opens(p12, "1234") and not p12_opens(p12, "trustme")
    assert provision(scd, uid, old="1234", new="5678") == T.PROVISION_PIN_FAILED  # paired already

    # Locked token: no wrapping.
    r = request(scd, Q(code=Q.WRAP_KEY, token_uuid=uid, container_uuid=uid, unwrapped_key=KEY))
    assert r.code == T.WRAPPED_KEY and not r.HasField("wrapped_key")

    assert unlock(scd, uid, "1234") == T.UNLOCK_SUCCESSFUL
    r = request(scd, Q(code=Q.WRAP_KEY, token_uuid=uid, container_uuid=uid, unwrapped_key=KEY))
    assert r.code == T.WRAPPED_KEY and r.HasField("wrapped_key")
    blob = r.wrapped_key
    assert KEY not in blob and len(blob) >= 96
    r = request(scd, Q(code=Q.UNWRAP_KEY, token_uuid=uid, container_uuid=uid, wrapped_key=blob))
    assert r.code == T.UNWRAPPED_KEY and r.unwrapped_key == KEY

    # One byte changed, or truncated: the original's "corrupt key file" reply (empty key).
    for bad in (blob[:-1] + bytes([blob[-1] ^ 1]), blob[:40], blob[:-8]):
        r = request(scd, Q(code=Q.UNWRAP_KEY, token_uuid=uid, container_uuid=uid, wrapped_key=bad))
        assert r.code == T.UNWRAPPED_KEY and r.HasField("unwrapped_key") and r.unwrapped_key == b""

    assert request(scd, Q(code=Q.LOCK, token_uuid=uid)).code == T.LOCK_SUCCESSFUL
    r = request(scd, Q(code=Q.UNWRAP_KEY, token_uuid=uid, container_uuid=uid, wrapped_key=blob))
    assert r.code == T.UNWRAPPED_KEY and not r.HasField("unwrapped_key")

    # CHANGE_PIN needs the pairing secret; the old PIN stops working.
    r = request(scd, Q(code=Q.CHANGE_PIN, token_uuid=uid, token_pin="1234", token_newpin="9999"))
    assert r.code == T.CHANGE_PIN_FAILED
    r = request(scd, Q(code=Q.CHANGE_PIN, token_uuid=uid, token_pin="1234", token_newpin="9999",
                       pairing_secret=SECRET))
    assert r.code == T.CHANGE_PIN_SUCCESSFUL
    assert p12_opens(p12, "9999") and not p12_opens(p12, "1234")
    assert unlock(scd, uid, "9999") == T.UNLOCK_SUCCESSFUL
    r = request(scd, Q(code=Q.UNWRAP_KEY, token_uuid=uid, container_uuid=uid, wrapped_key=blob))
    assert r.unwrapped_key == KEY  # same key pair: old key files still unwrap

    # Another token cannot unwrap this token's key file. Its PIN is set with an empty current PIN,
    # as newer GyroidOS clients do (soft tokens without a default password there).
    other = new_uuid()
    add(scd, other)
    assert provision(scd, other, old="") == T.PROVISION_PIN_SUCCESSFUL
    assert unlock(scd, other, "1234") == T.UNLOCK_SUCCESSFUL
    r = request(scd, Q(code=Q.UNWRAP_KEY, token_uuid=other, container_uuid=other, wrapped_key=blob))
    assert r.unwrapped_key == b""

    assert request(scd, Q(code=Q.TOKEN_REMOVE, token_uuid=uid)).code == T.TOKEN_REMOVE_SUCCESSFUL
    assert not p12.exists() and not (scd.base / "tokens" / f"{uid}.paired").exists()
    assert request(scd, Q(code=Q.TOKEN_REMOVE, token_uuid=uid)).code == T.TOKEN_REMOVE_FAILED
    assert unlock(scd, uid, "9999") == T.UNLOCK_FAILED  # no such token any more
    log = scd.log_text()
    for pin in ("trustme", "1234", "9999", "5678"):
        assert pin not in log, f"PIN {pin} appears in the log"


@pytest.mark.req("CR 1.11")
def test_scd_wrong_pin_lockout_until_restart(scd: Daemon, cmld_factory: DaemonFactory) -> None:
    uid = new_uuid()
    add(scd, uid)
    assert provision(scd, uid) == T.PROVISION_PIN_SUCCESSFUL
    # Two wrong, then right: the counter resets (unlike the original).
    assert unlock(scd, uid, "0000") == T.PASSWD_WRONG
    assert unlock(scd, uid, "0001") == T.PASSWD_WRONG
    assert unlock(scd, uid, "1234") == T.UNLOCK_SUCCESSFUL
    # A wrong pairing secret counts like a wrong PIN (the token belongs to another device).
    assert unlock(scd, uid, "1234", secret=b"\x00" * 8) == T.PASSWD_WRONG
    assert unlock(scd, uid, "0002") == T.PASSWD_WRONG
    assert unlock(scd, uid, "0003") == T.PASSWD_WRONG  # third in a row
    assert unlock(scd, uid, "1234") == T.LOCKED_TILL_REBOOT  # even the right PIN
    r = request(scd, Q(code=Q.CHANGE_PIN, token_uuid=uid, token_pin="1234", token_newpin="1",
                       pairing_secret=SECRET))
    assert r.code == T.LOCKED_TILL_REBOOT
    # Removing and re-adding the token does not clear the lock.
    assert request(scd, Q(code=Q.LOCK, token_uuid=uid)).code == T.LOCK_SUCCESSFUL
    assert unlock(scd, uid, "1234") == T.LOCKED_TILL_REBOOT
    # A restart of scd (a reboot) clears it.
    assert scd.stop() == 0
    scd2 = launch_scd(cmld_factory, scd.base, name="scd2")
    add(scd2, uid)
    assert unlock(scd2, uid, "1234") == T.UNLOCK_SUCCESSFUL


def test_scd_damaged_p12(scd: Daemon, cmld_factory: DaemonFactory) -> None:
    uid = new_uuid()
    add(scd, uid)
    assert provision(scd, uid) == T.PROVISION_PIN_SUCCESSFUL
    p12 = scd.base / "tokens" / f"{uid}.p12"
    good = p12.read_bytes()
    p12.write_bytes(good[: len(good) // 2])  # truncated on disk
    assert unlock(scd, uid, "1234") == T.UNLOCK_FAILED  # an I/O problem, not a wrong PIN
    assert unlock(scd, uid, "1234") == T.UNLOCK_FAILED
    assert unlock(scd, uid, "1234") == T.UNLOCK_FAILED
    assert p12.read_bytes() == good[: len(good) // 2], "scd changed a damaged token file"
    p12.write_bytes(good)
    assert unlock(scd, uid, "1234") == T.UNLOCK_SUCCESSFUL  # the truncations did not count as wrong PINs

    # A fresh scd refuses TOKEN_ADD on a damaged file instead of replacing it.
    bad = new_uuid()
    (scd.base / "tokens" / f"{bad}.p12").write_bytes(b"\x30\x82\x10\x00garbage")
    assert request(scd, Q(code=Q.TOKEN_ADD, token_uuid=bad)).code == T.TOKEN_ADD_FAILED
    assert (scd.base / "tokens" / f"{bad}.p12").read_bytes() == b"\x30\x82\x10\x00garbage"
    assert not list((scd.base / "tokens").glob(".*tmp*")), "temp files left behind"


@pytest.mark.parametrize("bad_uuid", ["../../etc/passwd", "", "not-a-uuid", "A" * 36])
def test_scd_token_uuid_must_be_a_uuid(scd: Daemon, bad_uuid: str) -> None:
    assert request(scd, Q(code=Q.TOKEN_ADD, token_uuid=bad_uuid)).code == T.TOKEN_ADD_FAILED
    assert request(scd, Q(code=Q.UNLOCK, token_uuid=bad_uuid, token_pin="x")).code == T.UNLOCK_FAILED
    assert sorted(p.name for p in (scd.base / "tokens").iterdir() if p.suffix == ".p12") == []


def test_scd_token_type_none_fails_cleanly(scd: Daemon) -> None:
    # The original aborts on TOKEN_ADD with type NONE (inventory §2.14 item 6).
    r = request(scd, Q(code=Q.TOKEN_ADD, token_type=1, token_uuid=new_uuid()))
    assert r.code == T.TOKEN_ADD_FAILED
    assert scd.alive()


def test_scd_missing_fields(scd: Daemon) -> None:
    uid = new_uuid()
    add(scd, uid)
    assert request(scd, Q(code=Q.UNLOCK, token_uuid=uid)).code == T.UNLOCK_FAILED
    assert request(scd, Q(code=Q.PROVISION_PIN, token_uuid=uid)).code == T.CHANGE_PIN_FAILED  # as the original
    r = request(scd, Q(code=Q.PROVISION_PIN, token_uuid=uid, token_pin="trustme", pairing_secret=SECRET))
    assert r.code == T.PROVISION_PIN_FAILED  # no new PIN
    r = request(scd, Q(code=Q.PROVISION_PIN, token_uuid=uid, token_pin="trustme", token_newpin="1"))
    assert r.code == T.PROVISION_PIN_FAILED  # no pairing secret
    assert provision(scd, uid) == T.PROVISION_PIN_SUCCESSFUL
    assert unlock(scd, uid, "1234") == T.UNLOCK_SUCCESSFUL
    r = request(scd, Q(code=Q.WRAP_KEY, token_uuid=uid))
    assert r.code == T.WRAPPED_KEY and not r.HasField("wrapped_key")
    r = request(scd, Q(code=Q.UNWRAP_KEY, token_uuid=uid))
    assert r.code == T.UNWRAPPED_KEY and not r.HasField("unwrapped_key")
