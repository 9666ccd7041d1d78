"""start and stop through `control` and `cml-control` with real containers, a real scd and a soft
token: every form of the key reaches the token (a wrong one is refused, the right one starts the
container), the PIN prompt, the setup forms, and `--wait` with each of its outcomes (RUNNING or
STOPPED reached, refused, settled elsewhere, timed out)."""

from __future__ import annotations

import re
import time
import uuid as uuidlib
from pathlib import Path

import pytest

from ..conftest import CliResult, Daemon, DaemonFactory, is_root
from .containers import install_guestos, state
from .scdlib import launch_scd, prepare_base
from .test_cli_compat import PROGS, rc_for, run

pytestmark = [pytest.mark.host, pytest.mark.skipif(not is_root(), reason="needs root")]
PIN = "pin-4kZ"

# (start arguments, stop arguments): the container is "tok"
KEY_FORMS: list[tuple[list[str], list[str]]] = [
    (["tok", f"--key={PIN}"], ["tok", f"--key={PIN}"]),
    (["tok", f"--ke={PIN}"], ["tok", f"-k{PIN}"]),
    (["tok", f"-k{PIN}"], ["tok", f"--ke={PIN}"]),
    (["tok", "--key", PIN], ["tok", "--key", PIN]),  # the original loses the value: we take it
    (["tok", "-k", PIN], ["tok", "-k", PIN]),
    ([f"--key={PIN}", "tok"], [f"--key={PIN}", "tok"]),  # options before the container
    ([f"-k{PIN}", "tok"], ["--key", PIN, "tok"]),
    (["tok", "extra", f"--key={PIN}"], ["tok", "extra", f"--key={PIN}"]),
]


def daemons(factory: DaemonFactory, src: Path) -> Daemon:
    base = prepare_base(factory.tmp / "cmld-base", None)
    install_guestos(src, base)
    # an init that never reports a booted service and ignores SIGTERM: BOOTING, then a long SHUTDOWN
    install_guestos(src, base, name="stubborn", init_path="/bin/sh",
                    init_param=["-c", "trap '' TERM USR1 USR2 INT HUP; while true; do sleep 1; done"])
    # an init that ends on its own
    install_guestos(src, base, name="brief", init_path="/bin/sh", init_param=["-c", "sleep 0.5"])
    launch_scd(factory, base)
    return factory.start("--stop-timeout", "3", "--boot-timeout", "60", base=base)


def create(d: Daemon, tmp: Path, name: str, guestos: str = "busybox", token: str = "NONE") -> None:
    conf = tmp / f"{name}-{uuidlib.uuid4().hex[:6]}.conf"
    conf.write_text(f'name: "{name}"\nguest_os: "{guestos}"\ncolor: 0\ntype: CONTAINER\ntoken_type: {token}\n'
                    "ram_limit: 64\n")
    r = run("cml-control", d.socket, "create", str(conf))
    assert r.rc == 0, r.out + r.err


def response(r: CliResult) -> str:
    m = re.search(r"^response: (\w+)$", r.out, re.M)
    return m.group(1) if m else ""


def test_key_forms_prompt_and_wait(cmld_factory: DaemonFactory, guestos_src: Path) -> None:
    d = daemons(cmld_factory, guestos_src)
    tmp = cmld_factory.tmp
    create(d, tmp, "tok", token="SOFT")
    # pair the token: the original's CI pipes the three answers into change_pin
    r = run("control", d.socket, "change_pin", "tok", stdin=f"trustme\n{PIN}\n{PIN}\n")
    assert r.rc == 0 and r.out == ("Current Password: New Password: Re-enter New Password: code: RESPONSE\n"
                                   "response: CONTAINER_CHANGE_PIN_SUCCESSFUL\n"), r.out + r.err

    for prog in PROGS:
        for start_args, stop_args in KEY_FORMS:
            r = run(prog, d.socket, "start", *start_args, "--wait")
            assert (r.rc, response(r)) == (0, "CONTAINER_START_OK"), (prog, start_args, r.out, r.err)
            assert state(d, "tok") == "RUNNING"  # --wait returned once it was
            r = run(prog, d.socket, "stop", *stop_args, "--wait")
            assert (r.rc, response(r)) == (0, "CONTAINER_STOP_OK"), (prog, stop_args, r.out, r.err)
            assert state(d, "tok") == "STOPPED"

        # a wrong key reaches the token too, and is refused; with --wait the exit status says so
        r = run(prog, d.socket, "start", "tok", "--key=wrong")
        assert response(r) == "CONTAINER_START_PASSWD_WRONG" and r.rc == rc_for(prog, False)
        r = run(prog, d.socket, "start", "tok", "-k", "--wait")  # -k alone: the default key, no prompt
        assert response(r) == "CONTAINER_START_PASSWD_WRONG" and r.rc == 1, r.out + r.err
        assert "Password" not in r.out + r.err
        # no key at all: the PIN is asked for (control on stdout, as the original; cml-control on stderr)
        r = run(prog, d.socket, "start", "tok", "--wait", stdin=f"{PIN}\n")
        assert response(r) == "CONTAINER_START_OK" and r.rc == 0, r.out + r.err
        assert ("Password: " in r.out) == (prog == "control") and ("Password: " in r.err) == (prog != "control")
        # --wait after a refusal: nothing to wait for
        r = run(prog, d.socket, "start", "tok", f"--key={PIN}", "--wait")
        assert response(r) == "CONTAINER_START_EEXIST" and r.rc == 1
        r = run(prog, d.socket, "stop", "tok", "--wait", stdin=f"{PIN}\n")
        assert response(r) == "CONTAINER_STOP_OK" and r.rc == 0
        r = run(prog, d.socket, "stop", "tok", f"--key={PIN}")
        assert response(r) == "CONTAINER_STOP_FAILED_NOT_RUNNING" and r.rc == rc_for(prog, False)
        assert state(d, "tok") == "STOPPED"
    assert PIN not in d.log_text()


def test_setup_forms_and_wait_outcomes(cmld_factory: DaemonFactory, guestos_src: Path) -> None:
    d = daemons(cmld_factory, guestos_src)
    tmp = cmld_factory.tmp
    create(d, tmp, "plain")
    create(d, tmp, "stub", guestos="stubborn")
    create(d, tmp, "brief", guestos="brief")
    for prog in PROGS:
        for form in (["plain", "-s"], ["plain", "--setup"], ["plain", "--se"], ["-s", "plain"], ["plain", "-sk"]):
            r = run(prog, d.socket, "start", *form, "--wait")
            assert (r.rc, response(r)) == (0, "CONTAINER_START_OK"), (prog, form, r.out, r.err)
            assert state(d, "plain") == "SETUP"  # --wait waits for SETUP in setup mode
            assert run(prog, d.socket, "stop", "plain", "--wait").rc == 0
            assert state(d, "plain") == "STOPPED"
        # timed out: the container stays BOOTING (exit 5), then a stop that outlasts --wait-timeout
        t0 = time.monotonic()
        r = run(prog, d.socket, "start", "stub", "--wait", "--wait-timeout=1")
        assert response(r) == "CONTAINER_START_OK" and r.rc == 5, r.out + r.err
        assert 1 <= time.monotonic() - t0 < 10
        assert "stub is still BOOTING after 1 s, not RUNNING" in r.err
        r = run(prog, d.socket, "stop", "stub", "--wait", "--wait-timeout", "0.5")
        assert response(r) == "CONTAINER_STOP_OK" and r.rc == 5, r.out + r.err
        assert "stub is still SHUTDOWN" in r.err
        r = run(prog, d.socket, "stop", "stub", "--wait")  # refused (SHUTDOWN is not stoppable): exit 1
        assert r.rc == 1
        deadline = time.monotonic() + 20
        while state(d, "stub") != "STOPPED" and time.monotonic() < deadline:
            time.sleep(0.1)
        # settled elsewhere: init ends by itself, the container is STOPPED, never RUNNING (exit 4)
        r = run(prog, d.socket, "start", "brief", "--wait")
        assert response(r) == "CONTAINER_START_OK" and r.rc == 4, r.out + r.err
        assert "brief is STOPPED, not RUNNING" in r.err and "cmld answered" not in r.err


def test_run_exit_status(cmld_factory: DaemonFactory, guestos_src: Path) -> None:
    """`run`: the command's output either way; cml-control exits with its status, control with 0
    (as the original, which has no way to tell)."""
    d = daemons(cmld_factory, guestos_src)
    create(d, cmld_factory.tmp, "runner")
    r = run("control", d.socket, "run", "runner", "nopty", "true")
    assert r.rc == 0 and re.search(r"^\[\d+\] <ERROR> container is not running \(state STOPPED\)$", r.err, re.M)
    assert run("cml-control", d.socket, "run", "runner", "nopty", "true").rc == 1
    assert run("cml-control", d.socket, "start", "runner", "--wait").rc == 0
    for prog, want in (("control", 0), ("cml-control", 7)):
        r = run(prog, d.socket, "run", "runner", "nopty", "sh", "-c", "echo out; echo err >&2; exit 7", stdin="")
        assert (r.rc, r.out) == (want, "out\nerr\n"), r  # one stream: stderr comes with stdout
    r = run("control", d.socket, "run", "runner", "nopty", "cat", stdin="piped\n")
    assert r.rc == 0 and r.out == "piped\n"
    assert run("cml-control", d.socket, "stop", "runner", "--wait").rc == 0

