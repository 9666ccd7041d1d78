"""Containers with a software token, end to end with the real cmld and scd and `cml-control`:
pairing by the first PIN change (J3), the container key made, wrapped and unwrapped by scd, wrong
PINs and the lockout, stop with credentials, corrupt and foreign key files (ZOMBIE, then wipe),
and removal of the token with the container."""

from __future__ import annotations

import socket
import uuid as uuidlib
from pathlib import Path

import pytest

from ..conftest import Daemon, DaemonFactory, cli, is_root
from .containers import state, uuid_of, wait_state
from .scdlib import scd_and_cmld

pytestmark = [pytest.mark.host, pytest.mark.skipif(not is_root(), reason="needs root")]
PIN = "pin-7Q3xK"
TRANSPORT_PIN = "trustme"



def token_conf(name: str) -> str:
    return (f'name: "{name}"\nguest_os: "busybox"\ncolor: 0\ntype: CONTAINER\ntoken_type: SOFT\n'
            "ram_limit: 64\n")


def daemons(factory: DaemonFactory, src: Path) -> tuple[Daemon, Daemon]:
    return scd_and_cmld(factory, guestos=src)


def create(d: Daemon, tmp: Path, name: str) -> str:
    conf = tmp / f"{name}-{uuidlib.uuid4().hex[:6]}.conf"
    conf.write_text(token_conf(name))
    r = cli(d.socket, "create", str(conf))
    assert r.rc == 0, r.out + r.err
    return uuid_of(d, name)


def start(d: Daemon, name: str, pin: str) -> str:
    r = cli(d.socket, "start", name, f"--key={pin}")
    return r.out + r.err


def change_pin(d: Daemon, name: str, old: str, new: str) -> str:
    r = cli(d.socket, "change_pin", name, stdin=f"{old}\n{new}\n{new}\n")
    return r.out + r.err


@pytest.mark.req("TSF Container Data Storage", "CR 1.1 (2)", "CR 1.5")
def test_soft_token_journey(cmld_factory: DaemonFactory, guestos_src: Path) -> None:
    scd, d = daemons(cmld_factory, guestos_src)
    base = d.base
    uid = create(d, cmld_factory.tmp, "tok")
    assert (base / "tokens" / f"{uid}.p12").is_file()  # TOKEN_ADD at create, in scd's store

    # J3: a start before the first PIN change is refused: the token is not paired with the device
    out = start(d, "tok", TRANSPORT_PIN)
    assert "CONTAINER_START_TOKEN_UNPAIRED" in out and "change_pin" in out, out
    assert "CONTAINER_CHANGE_PIN_FAILED" in change_pin(d, "tok", "not-the-transport-pin", PIN)
    assert "CONTAINER_CHANGE_PIN_SUCCESSFUL" in change_pin(d, "tok", TRANSPORT_PIN, PIN)
    assert (base / "containers" / uid / "token_is_paired").exists()
    assert len((base / "keys" / "device_pairing_secret").read_bytes()) == 8

    # wrong PIN, then the right one: the container key is made and stored wrapped
    assert "CONTAINER_START_PASSWD_WRONG" in start(d, "tok", "0000")
    assert state(d, "tok") == "STOPPED"
    assert "CONTAINER_START_OK" in start(d, "tok", PIN)
    wait_state(d, "tok", "RUNNING")
    wrapped = (base / "keys" / f"{uid}.key").read_bytes()
    assert len(wrapped) > 96
    # stop needs the PIN too (an authorization check), and a wrong one changes nothing
    r = cli(d.socket, "stop", "tok", "--key=0000")
    assert "CONTAINER_STOP_PASSWD_WRONG" in r.out + r.err and state(d, "tok") == "RUNNING"
    assert "CONTAINER_STOP_OK" in cli(d.socket, "stop", "tok", f"--key={PIN}").out
    wait_state(d, "tok", "STOPPED", timeout=15)
    # the second start unwraps the stored key instead of making a new one
    assert "CONTAINER_START_OK" in start(d, "tok", PIN)
    wait_state(d, "tok", "RUNNING")
    assert (base / "keys" / f"{uid}.key").read_bytes() == wrapped
    assert d.log_text().count("new container key") == 1
    assert "CONTAINER_STOP_OK" in cli(d.socket, "stop", "tok", f"--key={PIN}").out
    wait_state(d, "tok", "STOPPED", timeout=15)
    # a PIN change keeps the key usable
    assert "CONTAINER_CHANGE_PIN_SUCCESSFUL" in change_pin(d, "tok", PIN, PIN + "2")
    assert "CONTAINER_START_OK" in start(d, "tok", PIN + "2")
    wait_state(d, "tok", "RUNNING")
    assert "CONTAINER_STOP_OK" in cli(d.socket, "stop", "tok", f"--key={PIN}2").out
    wait_state(d, "tok", "STOPPED", timeout=15)

    # no PIN ever reaches a log
    for daemon in (d, scd):
        text = daemon.log_text()
        assert PIN not in text and TRANSPORT_PIN not in text.replace("'trustme'", "")

    # removal takes the token, the key and the pairing with it
    assert cli(d.socket, "remove", "tok").rc == 0
    assert not (base / "tokens" / f"{uid}.p12").exists()
    assert not (base / "keys" / f"{uid}.key").exists()
    assert not (base / "containers" / uid).exists()


@pytest.mark.req("CR 1.11")
def test_lockout_and_damaged_key_files(cmld_factory: DaemonFactory, guestos_src: Path) -> None:
    scd, d = daemons(cmld_factory, guestos_src)
    base = d.base
    a = create(d, cmld_factory.tmp, "ta")
    b = create(d, cmld_factory.tmp, "tb")
    for name in ("ta", "tb"):
        assert "CONTAINER_CHANGE_PIN_SUCCESSFUL" in change_pin(d, name, TRANSPORT_PIN, PIN)
    for name in ("ta", "tb"):
        assert "CONTAINER_START_OK" in start(d, name, PIN)
        wait_state(d, name, "RUNNING")
        assert cli(d.socket, "stop", name, f"--key={PIN}").rc == 0
        wait_state(d, name, "STOPPED", timeout=15)

    # three wrong PINs lock the token until scd restarts; then even the right PIN is refused
    assert "CONTAINER_START_PASSWD_WRONG" in start(d, "ta", "1")
    assert "CONTAINER_START_PASSWD_WRONG" in start(d, "ta", "2")
    out = start(d, "ta", "3")
    assert "CONTAINER_START_PASSWD_WRONG" in out or "CONTAINER_LOCKED_TILL_REBOOT" in out, out
    assert "CONTAINER_LOCKED_TILL_REBOOT" in start(d, "ta", PIN)
    assert "CONTAINER_START_OK" in start(d, "tb", PIN)  # other tokens are not affected
    wait_state(d, "tb", "RUNNING")
    assert cli(d.socket, "stop", "tb", f"--key={PIN}").rc == 0
    wait_state(d, "tb", "STOPPED", timeout=15)
    scd.stop()
    scd = cmld_factory.launch("scd", "scd", base=base, kind=socket.SOCK_SEQPACKET)
    assert "CONTAINER_START_OK" in start(d, "ta", PIN)
    wait_state(d, "ta", "RUNNING")
    assert cli(d.socket, "stop", "ta", f"--key={PIN}").rc == 0
    wait_state(d, "ta", "STOPPED", timeout=15)

    # a truncated key file: clear error, ZOMBIE, recoverable only by wipe (which makes a new key)
    key_a = base / "keys" / f"{a}.key"
    good_a = key_a.read_bytes()
    key_a.write_bytes(good_a[:40])
    out = start(d, "ta", PIN)
    assert "CONTAINER_START_EINTERNAL" in out and "corrupt" in out, out
    assert state(d, "ta") == "ZOMBIE"
    assert "ZOMBIE" in start(d, "ta", PIN)
    assert cli(d.socket, "wipe", "ta").rc == 0
    assert state(d, "ta") == "STOPPED" and not key_a.exists()
    assert "CONTAINER_START_OK" in start(d, "ta", PIN)
    wait_state(d, "ta", "RUNNING")
    assert cli(d.socket, "stop", "ta", f"--key={PIN}").rc == 0
    wait_state(d, "ta", "STOPPED", timeout=15)

    # one byte flipped in the wrapped key, and b's key file under a's token: both refused
    good_a = key_a.read_bytes()
    flipped = bytearray(good_a)
    flipped[len(flipped) // 2] ^= 0x01
    key_a.write_bytes(bytes(flipped))
    out = start(d, "ta", PIN)
    assert "CONTAINER_START_EINTERNAL" in out and "does not unwrap" in out, out
    assert cli(d.socket, "wipe", "ta").rc == 0
    key_a.write_bytes((base / "keys" / f"{b}.key").read_bytes())
    out = start(d, "ta", PIN)
    assert "CONTAINER_START_EINTERNAL" in out and "another token" in out, out
    assert state(d, "ta") == "ZOMBIE"
    # scd stopped: a clear refusal, nothing half-done
    assert cli(d.socket, "wipe", "ta").rc == 0
    scd.stop()
    out = start(d, "ta", PIN)
    assert "CONTAINER_START_TOKEN_UNINIT" in out and "cannot connect to scd" in out, out
    assert state(d, "ta") == "STOPPED" and not key_a.exists()


def memory_contains(pid: int, needles: list[bytes]) -> bool:
    """Whether any readable, private mapping of the process holds one of the byte strings."""
    with open(f"/proc/{pid}/maps") as maps, open(f"/proc/{pid}/mem", "rb", buffering=0) as mem:
        for line in maps:
            fields = line.split()
            if "r" not in fields[1] or (len(fields) > 5 and fields[5].startswith("[v")):
                continue
            start, end = (int(x, 16) for x in fields[0].split("-"))
            try:
                mem.seek(start)
                chunk = mem.read(end - start)
            except (OSError, ValueError, OverflowError):
                continue
            if any(n in chunk for n in needles):
                return True
    return False


@pytest.mark.req("TSF Container Data Storage")
def test_token_private_key_stays_in_scd(cmld_factory: DaemonFactory, guestos_src: Path) -> None:
    """The soft token's private key (which wraps the container key) is in scd's memory while it
    is unlocked, and never in cmld's, before or after a start that used it."""
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.hazmat.primitives.serialization import pkcs12

    from .scdlib import SECRET, Q, request

    scd, d = daemons(cmld_factory, guestos_src)
    uid = create(d, cmld_factory.tmp, "mem")
    assert "CONTAINER_CHANGE_PIN_SUCCESSFUL" in change_pin(d, "mem", TRANSPORT_PIN, PIN)
    assert "CONTAINER_START_OK" in start(d, "mem", PIN)
    wait_state(d, "mem", "RUNNING")
    key, _, _ = pkcs12.load_key_and_certificates((d.base / "tokens" / f"{uid}.p12").read_bytes(), PIN.encode())
    assert isinstance(key, ec.EllipticCurvePrivateKey)
    scalar = key.private_numbers().private_value.to_bytes(32, "big")
    needles = [scalar, scalar[::-1]]  # big-endian, and as OpenSSL's little-endian limbs
    assert not memory_contains(d.proc.pid, needles)
    # the scan does find it where it is: in scd, with the token unlocked
    pairing = (d.base / "keys" / "device_pairing_secret").read_bytes()
    assert pairing != SECRET
    r = request(scd, Q(code=Q.UNLOCK, token_uuid=uid, token_type=2, token_pin=PIN, pairing_secret=pairing))
    assert r.code == r.UNLOCK_SUCCESSFUL
    assert memory_contains(scd.proc.pid, needles)
    assert cli(d.socket, "stop", "mem", f"--key={PIN}").rc == 0
    wait_state(d, "mem", "STOPPED", timeout=15)
    assert not memory_contains(d.proc.pid, needles)
