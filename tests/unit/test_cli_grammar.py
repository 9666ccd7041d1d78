"""The command line of `control` and `cml-control` (cml_control/grammar.py): every option form of
the original client, by subcommand, and what it means; the forms it refuses; our additions; and
the original's UUID test for container arguments (identify.py)."""

from __future__ import annotations

import pytest

from cml_common import paths
from cml_control.grammar import DEFAULT_SOCKET, PHASE_COMMAND, PHASE_GLOBAL, Invocation, UsageError, parse
from cml_control.identify import original_uuid

pytestmark = pytest.mark.unit

U = "ef014bf8-82fa-4fe8-8803-6ad03746f1cc"

# argv -> the fields that must hold (anything not named keeps its default)
ACCEPTED: list[tuple[list[str], dict[str, object]]] = [
    # global options: -s SOCK, -sSOCK, --socket=SOCK, --socket SOCK, a prefix, and ours
    (["list"], {"command": "list", "socket": DEFAULT_SOCKET, "system": False}),
    (["-s", "/x", "list"], {"socket": "/x"}),
    (["-s/x", "list"], {"socket": "/x"}),
    (["--socket=/x", "list"], {"socket": "/x"}),
    (["--socket", "/x", "list"], {"socket": "/x"}),
    (["--so=/x", "list"], {"socket": "/x"}),
    (["-s", "/a", "-s", "/b", "list"], {"socket": "/b"}),
    (["--json", "--timeout", "5", "list"], {"json": True, "timeout": 5.0}),
    (["--timeout=0", "list"], {"timeout": None}),
    (["-h"], {"help": True, "command": ""}),
    (["--help", "--bogus"], {"help": True}),  # the original prints its usage at -h, before --bogus
    (["--he"], {"help": True}),
    # commands are case-insensitive
    (["LIST"], {"command": "list", "command_word": "LIST"}),
    (["State", "c"], {"command": "state", "container": "c"}),
    # list [-s | --system], permuted, operands ignored
    (["list", "-s"], {"system": True}),
    (["list", "--system"], {"system": True}),
    (["list", "--sys"], {"system": True}),
    (["list", "extra", "-s", "more"], {"system": True}),
    (["-s", "/x", "list", "-s"], {"socket": "/x", "system": True}),
    (["list", "-s", "--json"], {"system": True, "json": True}),
    # start: -kPIN, --key=PIN, --ke=PIN, -s/--setup/--se, options before or after the container
    (["start", "c", "-kPIN"], {"container": "c", "key": "PIN", "key_given": True, "setup": False}),
    (["start", "c", "--key=PIN"], {"key": "PIN", "key_given": True}),
    (["start", "c", "--ke=PIN"], {"key": "PIN"}),
    (["start", "c", "--k=PIN"], {"key": "PIN"}),
    (["start", "c", "--key="], {"key": "", "key_given": True}),
    (["start", "--key=PIN", "c"], {"container": "c", "key": "PIN"}),
    (["start", "-kPIN", "c"], {"container": "c", "key": "PIN"}),
    (["start", "c", "-s"], {"setup": True, "key_given": False, "key": None}),
    (["start", "c", "--setup"], {"setup": True}),
    (["start", "c", "--se"], {"setup": True}),
    (["start", "-s", "c", "-kPIN"], {"setup": True, "key": "PIN", "container": "c"}),
    (["start", "c", "-sk1"], {"setup": True, "key": "1"}),
    (["start", "c", "-ks"], {"setup": False, "key": "s"}),
    (["start", "c", "extra", "--key=PIN"], {"container": "c", "key": "PIN"}),
    (["start", "--", "-c"], {"container": "-c"}),
    # -k / --key without a value: no key (the daemon then uses the default key), no prompt
    (["start", "c", "-k"], {"key": None, "key_given": True}),
    (["start", "c", "--key"], {"key": None, "key_given": True}),
    (["start", "c", "--key", "--setup"], {"key": None, "key_given": True, "setup": True}),
    # the documented fix: a separate value is taken (the original loses it)
    (["start", "c", "--key", "PIN"], {"key": "PIN", "container": "c"}),
    (["start", "c", "-k", "PIN"], {"key": "PIN", "container": "c"}),
    (["start", "--key", "PIN", "c"], {"key": "PIN", "container": "c"}),
    # ours: --wait, --wait-timeout
    (["start", "c", "--wait"], {"wait": True, "wait_timeout": 60.0}),
    (["start", "c", "--wait-timeout=2.5"], {"wait": True, "wait_timeout": 2.5}),
    (["start", "c", "--wait-timeout", "7"], {"wait": True, "wait_timeout": 7.0}),
    # stop: the same key forms
    (["stop", "c", "--key=PIN"], {"command": "stop", "key": "PIN"}),
    (["stop", "c", "-kPIN"], {"key": "PIN"}),
    (["stop", "c", "-k", "PIN"], {"key": "PIN"}),
    (["stop", "--key", "PIN", "c", "--wait"], {"key": "PIN", "container": "c", "wait": True}),
    (["stop", "c"], {"key": None, "key_given": False}),
    # assign_iface / unassign_iface: --iface=X, --iface X, -iX, -i X, --if=X, --persistent, -p
    (["assign_iface", "c", "--iface=eth0"], {"iface": "eth0", "persistent": False, "container": "c"}),
    (["assign_iface", "c", "--iface", "eth0"], {"iface": "eth0"}),
    (["assign_iface", "c", "-ieth0"], {"iface": "eth0"}),
    (["assign_iface", "c", "-i", "eth0"], {"iface": "eth0"}),
    (["assign_iface", "c", "--if=eth0", "--persistent"], {"iface": "eth0", "persistent": True}),
    (["unassign_iface", "c", "--iface=eth0", "-p"], {"command": "unassign_iface", "persistent": True}),
    (["unassign_iface", "-p", "--pers", "--iface", "eth0", "c"], {"persistent": True, "container": "c"}),
    (["assign_iface", "c", "-pieth0"], {"persistent": True, "iface": "eth0"}),
    # retrieve_logs <dir> [-r | --remove]
    (["retrieve_logs", "/d"], {"args": ["/d"], "remove_logs": False}),
    (["retrieve_logs", "/d", "-r"], {"remove_logs": True}),
    (["retrieve_logs", "/d", "--remove"], {"remove_logs": True}),
    (["retrieve_logs", "--rem", "/d", "extra"], {"remove_logs": True, "args": ["/d"]}),
    # positional commands: arguments by position, whatever follows ignored
    (["remove", "c", "--key=x"], {"command": "remove", "container": "c", "key": None}),
    (["state", "c", "extra"], {"container": "c"}),
    (["config", "c", "--whatever"], {"container": "c"}),
    (["state", "c", "--json"], {"json": True, "container": "c"}),
    (["state", "--json", "c"], {"json": True, "container": "c"}),
    (["state", "c", "--timeout", "3"], {"timeout": 3.0}),
    (["reboot", "--help"], {"command": "reboot", "help": False, "help_ignored": True}),
    (["reload", "extra", "words"], {"command": "reload"}),
    (["create", "a.conf"], {"args": ["a.conf"]}),
    (["create", "a.conf", "a.sig"], {"args": ["a.conf", "a.sig"]}),
    (["create", "a.conf", "a.sig", "a.cert", "extra"], {"args": ["a.conf", "a.sig", "a.cert"]}),
    (["create", "-weird.conf"], {"args": ["-weird.conf"]}),
    (["update_config", "c", "a.conf"], {"container": "c", "args": ["a.conf"]}),
    (["update_config", "c", "a.conf", "s", "t", "u"], {"args": ["a.conf", "s", "t"]}),
    (["push_guestos_config", "g.conf", "g.sig", "g.pem"], {"args": ["g.conf", "g.sig", "g.pem"]}),
    (["push_guestos_config", "g.conf"], {"args": ["g.conf"]}),
    (["remove_guestos", "os"], {"args": ["os"]}),
    (["ca_register", "ca.pem"], {"args": ["ca.pem"]}),
    (["ca_register", "ca.pem", "--json"], {"args": ["ca.pem"], "json": True}),
    (["pull_csr", "out.csr"], {"args": ["out.csr"]}),
    (["push_cert", "dev.cert"], {"args": ["dev.cert"]}),
    (["dev_access", "c", "c 4:1 rwm", "extra"], {"container": "c", "args": ["c 4:1 rwm"]}),
    (["change_pin", "c"], {"command": "change_pin", "container": "c"}),
    (["freeze", U], {"container": U}),
    # run <c> [nopty] <cmd> [args...]: everything after the container is the command's
    (["run", "c", "ls", "-l", "--json"], {"container": "c", "args": ["ls", "-l", "--json"], "pty": True,
                                          "json": False}),
    (["run", "c", "nopty", "sh", "-c", "echo hi"], {"pty": False, "args": ["sh", "-c", "echo hi"]}),
    (["run", "--json", "c", "true"], {"json": True, "args": ["true"]}),
    (["run", "c", "--help"], {"args": ["--help"], "help": False}),
]


@pytest.mark.parametrize("argv,want", ACCEPTED, ids=[" ".join(a) for a, _ in ACCEPTED])
def test_accepted(argv: list[str], want: dict[str, object]) -> None:
    inv = parse(argv, "control")
    for field, value in want.items():
        assert getattr(inv, field) == value, field


# argv -> (phase, glibc's diagnostic or None when the original prints only its usage)
REFUSED: list[tuple[list[str], str, str | None]] = [
    ([], PHASE_COMMAND, None),
    (["-s"], PHASE_GLOBAL, "control: option requires an argument -- 's'"),
    (["--socket"], PHASE_GLOBAL, "control: option '--socket' requires an argument"),
    (["-x", "list"], PHASE_GLOBAL, "control: invalid option -- 'x'"),
    (["--bogus", "list"], PHASE_GLOBAL, "control: unrecognized option '--bogus'"),
    (["--help=1"], PHASE_GLOBAL, "control: option '--help' doesn't allow an argument"),
    (["frobnicate"], PHASE_COMMAND, None),
    (["list", "-x"], PHASE_COMMAND, "list: invalid option -- 'x'"),
    (["LIST", "--bogus"], PHASE_COMMAND, "LIST: unrecognized option '--bogus'"),
    (["list", "--system=1"], PHASE_COMMAND, "list: option '--system' doesn't allow an argument"),
    (["start"], PHASE_COMMAND, None),
    (["start", "c", "--no-switch"], PHASE_COMMAND, None),  # the original's switch sends it to its usage
    (["start", "c", "--no-switch", "--bogus"], PHASE_COMMAND, None),  # ... before it sees --bogus
    (["start", "c", "-n"], PHASE_COMMAND, "start: invalid option -- 'n'"),
    (["start", "c", "-x"], PHASE_COMMAND, "start: invalid option -- 'x'"),
    (["start", "c", "--wai"], PHASE_COMMAND,
     "start: option '--wai' is ambiguous; possibilities: '--wait' '--wait-timeout'"),
    (["start", "c", "--wait-timeout=soon"], PHASE_COMMAND, None),
    (["start", "c", "--wait-timeout=0"], PHASE_COMMAND, None),
    (["start", "-k", "c"], PHASE_COMMAND, None),  # c is taken as the key: no container left
    (["stop", "c", "--setup"], PHASE_COMMAND, None),
    (["stop", "c", "-s"], PHASE_COMMAND, "stop: invalid option -- 's'"),
    (["stop", "c", "--no-switch"], PHASE_COMMAND, None),
    (["assign_iface", "c"], PHASE_COMMAND, None),  # the original sends it nameless; cmld never answers
    (["assign_iface", "c", "--iface"], PHASE_COMMAND, "assign_iface: option '--iface' requires an argument"),
    (["assign_iface", "c", "-i"], PHASE_COMMAND, None),
    (["unassign_iface", "--iface=x"], PHASE_COMMAND, None),
    (["retrieve_logs"], PHASE_COMMAND, None),
    (["retrieve_logs", "/d", "-x"], PHASE_COMMAND, "/d: invalid option -- 'x'"),  # its getopt starts at /d
    (["state"], PHASE_COMMAND, None),
    (["remove"], PHASE_COMMAND, None),
    (["create"], PHASE_COMMAND, None),
    (["update_config", "c"], PHASE_COMMAND, None),
    (["push_guestos_config", "g.conf", "g.sig"], PHASE_COMMAND, None),
    (["remove_guestos"], PHASE_COMMAND, None),
    (["remove_guestos", "a", "b"], PHASE_COMMAND, None),
    (["ca_register", "a", "b"], PHASE_COMMAND, None),
    (["pull_csr"], PHASE_COMMAND, None),
    (["push_cert", "a", "b"], PHASE_COMMAND, None),
    (["dev_access", "c"], PHASE_COMMAND, None),
    (["run", "c"], PHASE_COMMAND, None),
    (["run", "c", "nopty"], PHASE_COMMAND, None),
    (["run", "-x", "c", "ls"], PHASE_COMMAND, "run: invalid option -- 'x'"),
    (["state", "c", "--timeout", "never"], PHASE_COMMAND, None),
]


@pytest.mark.parametrize("argv,phase,diagnostic", REFUSED, ids=[" ".join(a) or "(none)" for a, _, _ in REFUSED])
def test_refused(argv: list[str], phase: str, diagnostic: str | None) -> None:
    with pytest.raises(UsageError) as e:
        parse(argv, "control")
    assert e.value.phase == phase
    assert e.value.diagnostic == diagnostic
    assert e.value.reason  # cml-control always has something to say


def test_help_after_the_command() -> None:
    for argv in (["start", "c", "-h"], ["list", "--help"], ["run", "-h", "c", "ls"], ["stop", "--he", "c"]):
        assert parse(argv, "cml-control").help, argv


def test_defaults() -> None:
    inv = Invocation("x")
    assert inv.socket == DEFAULT_SOCKET == str(paths.CONTROL_SOCKET)
    assert inv.timeout == 60.0 and inv.wait_timeout == 60.0


@pytest.mark.parametrize("ident,uuid,warns", [
    (U, U, False),
    (U.upper(), U, False),
    (U.replace("-", ""), U, False),
    (U.replace("-", "") + "trailing", U, False),
    ("demo", None, False),
    ("", None, False),
    ("a-very-long-container-name-for-tests", None, False),  # 36 characters, not a UUID: a name
    ("abcdef01-abcd-abcd-abcd-abcdefabcdeX", None, True),  # scans, but prints back differently
    ("0123456789abcdef0123456789abcdefg", "01234567-89ab-cdef-0123-456789abcdef", False),
    (" " + U[1:], None, True),
    ("x" * 40, None, False),
])
def test_original_uuid(ident: str, uuid: str | None, warns: bool) -> None:
    got, warning = original_uuid(ident)
    assert got == uuid
    assert (warning is not None) == warns
