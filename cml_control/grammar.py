"""The command line of `control` and `cml-control`: one grammar for both, read the way the
original C client reads it.

The original parses global options with getopt_long (`+s:h`, long `socket`, `help`), stops at the
command word (matched case-insensitively), and then:

- `list`, `start`, `stop`, `assign_iface`, `unassign_iface` and `retrieve_logs` run getopt_long
  again over the words after the command, with their own table (GNU permutation: options may come
  before or after the container, extra operands are ignored). An option outside the table prints
  the usage.
- every other command takes its arguments by position and ignores whatever follows them
  (`remove <c> --key=x` removes <c>).

Our additions are options the original rejects or never sees, so no script for the original
changes meaning: `--json`, `--timeout S`, `--wait` and `--wait-timeout S` (start and stop), and
`-h`/`--help` after the command. In commands that take arguments by position, `--json`,
`--timeout S` and the help words are picked out wherever they stand (except in the command that
`run` runs).

Pure logic: it raises UsageError and never prints, so the two programs present errors their own
way (see main.py and control_main.py).
"""

from __future__ import annotations

import math

from .getopt import NO_ARGUMENT, OPTIONAL_ARGUMENT, REQUIRED_ARGUMENT, GetoptError, LongOption, getopt_long

DEFAULT_SOCKET = "/run/socket/cml-control"  # = cml_common.paths.CONTROL_SOCKET (a unit test checks)
DEFAULT_TIMEOUT = 60.0  # s to wait for each reply (0 or less: no limit)
DEFAULT_WAIT_TIMEOUT = 60.0  # s for --wait (cmld's own stop timeout is 45 s before it kills)

PHASE_GLOBAL, PHASE_COMMAND = "global", "command"

NO_ARGS = ("list_guestos", "reload", "wipe_device", "destroy_system", "reboot", "set_provisioned",
           "get_provisioned", "device_stats")
ONE_FILE = ("remove_guestos", "ca_register", "pull_csr", "push_cert")  # exactly one argument
CONTAINER_ONLY = ("state", "remove", "config", "freeze", "unfreeze", "wipe", "snapshot", "allow_audio",
                  "deny_audio", "ifaces", "change_pin")
LITERAL = (*NO_ARGS, *ONE_FILE, *CONTAINER_ONLY, "create", "update_config", "push_guestos_config", "dev_access")
WITH_OPTIONS = ("list", "start", "stop", "assign_iface", "unassign_iface", "retrieve_logs")
COMMANDS = frozenset((*LITERAL, *WITH_OPTIONS, "run"))
CONTAINER_COMMANDS = frozenset((*CONTAINER_ONLY, "update_config", "dev_access", "start", "stop", "assign_iface",
                                "unassign_iface", "run"))


class UsageError(Exception):
    """A command line the original answers with its usage text.

    `diagnostic` is what glibc's getopt printed before that (`<prog>: invalid option -- 'x'`), or
    None when the original prints only the usage; `reason` always says what is wrong, for
    cml-control. `info` is an INFO line the original logs first (retrieve_logs' missing dir)."""

    def __init__(self, reason: str, phase: str, *, diagnostic: str | None = None, info: str | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.phase = phase
        self.diagnostic = diagnostic
        self.info = info


class Invocation:
    """Everything the command line says, in the original's terms."""

    __slots__ = ("args", "command", "command_word", "container", "help", "help_ignored", "iface", "json", "key",
                 "key_given", "persistent", "prog", "pty", "remove_logs", "setup", "socket", "system", "timeout",
                 "wait", "wait_timeout")

    def __init__(self, prog: str) -> None:
        self.prog = prog
        self.command = ""  # canonical (lower case)
        self.command_word = ""  # as typed: getopt names it in its diagnostics
        self.socket = DEFAULT_SOCKET
        self.json = False
        self.timeout: float | None = DEFAULT_TIMEOUT
        self.help = False  # -h/--help where options are parsed
        self.help_ignored = False  # a help word where the original ignores arguments (`reboot --help`)
        self.container: str | None = None
        self.args: list[str] = []  # positional arguments after the container (files, rule, dir, argv)
        self.pty = True  # run: no `nopty`
        self.key: str | None = None
        self.key_given = False  # -k/--key given, with or without a value
        self.setup = False
        self.system = False
        self.iface: str | None = None
        self.persistent = False
        self.remove_logs = False
        self.wait = False
        self.wait_timeout = DEFAULT_WAIT_TIMEOUT


# ---------------------------------------------------------------------------------- tables

_EXTENSIONS = [LongOption("json", NO_ARGUMENT, "json"), LongOption("timeout", REQUIRED_ARGUMENT, "timeout"),
               LongOption("help", NO_ARGUMENT, "h")]
_WAIT = [LongOption("wait", NO_ARGUMENT, "wait"), LongOption("wait-timeout", REQUIRED_ARGUMENT, "wait-timeout")]
# The original's start_options serve start and stop alike; its `switch` accepts only k and s.
_START_LONG = [LongOption("key", OPTIONAL_ARGUMENT, "k"), LongOption("no-switch", NO_ARGUMENT, "n"),
               LongOption("setup", NO_ARGUMENT, "s")]

GLOBAL_SHORT = "+s:h"
GLOBAL_LONG = [LongOption("socket", REQUIRED_ARGUMENT, "s"), LongOption("help", NO_ARGUMENT, "h"),
               LongOption("json", NO_ARGUMENT, "json"), LongOption("timeout", REQUIRED_ARGUMENT, "timeout")]

# command -> (short options, long options, keys the original's switch sends to its usage)
OPTION_TABLES: dict[str, tuple[str, list[LongOption], frozenset[str]]] = {
    "list": ("sh", [LongOption("system", NO_ARGUMENT, "s"), *_EXTENSIONS], frozenset()),
    # `-k` takes an optional argument for stop too (the original's stop string is "k", so `-kPIN`
    # is an invalid option there and `-k` alone sends the default key).
    "start": ("k::sh", [*_START_LONG, *_WAIT, *_EXTENSIONS], frozenset({"n"})),
    "stop": ("k::h", [*_START_LONG, *_WAIT, *_EXTENSIONS], frozenset({"n", "s"})),
    "assign_iface": ("i::ph", [LongOption("iface", REQUIRED_ARGUMENT, "i"),
                               LongOption("persistent", NO_ARGUMENT, "p"), *_EXTENSIONS], frozenset()),
    "retrieve_logs": ("rh", [LongOption("remove", NO_ARGUMENT, "r"), *_EXTENSIONS], frozenset()),
}
OPTION_TABLES["unassign_iface"] = OPTION_TABLES["assign_iface"]


# ---------------------------------------------------------------------------------- parsing


def _seconds(value: str | None, what: str, phase: str) -> float:
    try:
        s = float(value or "")
    except ValueError:
        raise UsageError(f"{what} wants a number of seconds, not {value!r}", phase) from None
    if not math.isfinite(s):
        raise UsageError(f"{what} wants a number of seconds, not {value!r}", phase)
    return s


def _set_timeout(inv: Invocation, value: str | None, phase: str) -> None:
    s = _seconds(value, "--timeout", phase)
    inv.timeout = s if s > 0 else None


def parse(argv: list[str], prog: str) -> Invocation:
    """Parse argv (without the program name). Raises UsageError."""
    inv, rest = parse_global(argv, prog)
    if not inv.help:
        parse_command(inv, rest)
    return inv


def parse_global(argv: list[str], prog: str) -> tuple[Invocation, list[str]]:
    """The options before the command, and the words from the command on. The original checks
    the socket file between this step and the next one."""
    inv = Invocation(prog)
    try:
        opts, rest = getopt_long(argv, GLOBAL_SHORT, GLOBAL_LONG, stop_at=frozenset({"h"}))
    except GetoptError as e:
        raise UsageError(str(e), PHASE_GLOBAL, diagnostic=f"{prog}: {e}") from None
    for key, value in opts:
        if key == "s":
            inv.socket = value or ""
        elif key == "h":
            inv.help = True
            return inv, []
        elif key == "json":
            inv.json = True
        elif key == "timeout":
            _set_timeout(inv, value, PHASE_GLOBAL)
    return inv, rest


def parse_command(inv: Invocation, rest: list[str]) -> None:
    """The command word and its arguments (`rest` as parse_global returned it)."""
    if not rest:
        raise UsageError("no command given", PHASE_COMMAND)
    word = rest[0]
    command = word.lower() if word.isascii() else word
    if command not in COMMANDS:
        raise UsageError(f"unknown command {word!r}", PHASE_COMMAND)
    inv.command, inv.command_word = command, word
    if command in OPTION_TABLES:
        _parse_with_options(inv, rest[1:])
    elif command == "run":
        _parse_run(inv, rest[1:])
    else:
        _parse_literal(inv, _pick_extensions(inv, rest[1:]))


def _parse_with_options(inv: Invocation, args: list[str]) -> None:
    short, long, refused = OPTION_TABLES[inv.command]
    # getopt names its argv[0] in diagnostics: the command word, but for retrieve_logs the word
    # after it (the original parses from the log directory on).
    name = (args[0] if args else "") if inv.command == "retrieve_logs" else inv.command_word
    try:
        opts, operands = getopt_long(args, short, long, optional_takes_next=True, stop_at=refused | {"h"})
    except GetoptError as e:
        raise UsageError(str(e), PHASE_COMMAND, diagnostic=f"{name}: {e}") from None
    for key, value in opts:
        if key in refused:
            what = {"n": "--no-switch", "s": "--setup"}[key]
            raise UsageError(f"{inv.command} does not take {what} (the original's client refuses it too)",
                             PHASE_COMMAND)
        if key == "h":
            inv.help = True
            return
        if key == "k":
            inv.key, inv.key_given = value, True
        elif key == "s":
            if inv.command == "list":
                inv.system = True
            else:
                inv.setup = True
        elif key == "i":
            inv.iface = value
        elif key == "p":
            inv.persistent = True
        elif key == "r":
            inv.remove_logs = True
        elif key == "json":
            inv.json = True
        elif key == "timeout":
            _set_timeout(inv, value, PHASE_COMMAND)
        elif key == "wait":
            inv.wait = True
        elif key == "wait-timeout":
            inv.wait = True
            inv.wait_timeout = _seconds(value, "--wait-timeout", PHASE_COMMAND)
            if inv.wait_timeout <= 0:
                raise UsageError("--wait-timeout wants a positive number of seconds", PHASE_COMMAND)
    if inv.command == "list":
        return  # operands are ignored
    if not operands:
        what = "a directory" if inv.command == "retrieve_logs" else "a container (UUID or name)"
        raise UsageError(f"{inv.command} needs {what}", PHASE_COMMAND)
    if inv.command == "retrieve_logs":
        inv.args = [operands[0]]
        return
    inv.container = operands[0]
    if inv.command in ("assign_iface", "unassign_iface") and not inv.iface:
        # The original sends the request without a name and cmld never answers it.
        raise UsageError(f"{inv.command} needs --iface <name>", PHASE_COMMAND)


def _pick_extensions(inv: Invocation, args: list[str]) -> list[str]:
    """Words of a positional command minus our own options (`--json`, `--timeout S`, `-h`,
    `--help`); the original would have taken or ignored them as arguments."""
    out: list[str] = []
    i = 0
    while i < len(args):
        a = args[i]
        i += 1
        if a == "--json":
            inv.json = True
        elif a in ("-h", "--help"):
            inv.help_ignored = True
        elif a == "--timeout" and i < len(args):
            _set_timeout(inv, args[i], PHASE_COMMAND)
            i += 1
        elif a.startswith("--timeout="):
            _set_timeout(inv, a.partition("=")[2], PHASE_COMMAND)
        else:
            out.append(a)
    return out


def _parse_literal(inv: Invocation, args: list[str]) -> None:
    cmd = inv.command
    if cmd in NO_ARGS:
        return
    if cmd in ONE_FILE:
        if len(args) != 1:
            raise UsageError(f"{cmd} takes exactly one argument", PHASE_COMMAND)
        inv.args = args
        return
    if cmd in ("create", "push_guestos_config"):
        if not args:
            raise UsageError(f"{cmd} needs a config file", PHASE_COMMAND)
        if cmd == "push_guestos_config" and len(args) == 2:
            raise UsageError("push_guestos_config takes a config, or a config, a signature and a certificate",
                             PHASE_COMMAND)
        inv.args = args[:3]
        return
    if not args:
        raise UsageError(f"{cmd} needs a container (UUID or name)", PHASE_COMMAND)
    inv.container = args[0]
    if cmd == "update_config":
        if len(args) < 2:
            raise UsageError("update_config needs a container and a config file", PHASE_COMMAND)
        inv.args = args[1:4]
    elif cmd == "dev_access":
        if len(args) < 2:
            raise UsageError("dev_access needs a container and a rule such as 'c 4:1 rwm'", PHASE_COMMAND)
        inv.args = args[1:2]


def _parse_run(inv: Invocation, args: list[str]) -> None:
    """`run [our options] <c> [nopty] <cmd> [args...]`: everything after the container belongs to
    the command, so options are read only before it."""
    try:
        opts, operands = getopt_long(args, "+h", _EXTENSIONS, stop_at=frozenset({"h"}))
    except GetoptError as e:
        raise UsageError(str(e), PHASE_COMMAND, diagnostic=f"{inv.command_word}: {e}") from None
    for key, value in opts:
        if key == "h":
            inv.help = True
            return
        if key == "json":
            inv.json = True
        elif key == "timeout":
            _set_timeout(inv, value, PHASE_COMMAND)
    if not operands:
        raise UsageError("run needs a container and a command", PHASE_COMMAND)
    inv.container = operands[0]
    argv = operands[1:]
    if argv and argv[0] == "nopty":
        inv.pty = False
        argv = argv[1:]
    if not argv:
        raise UsageError("run needs a command", PHASE_COMMAND)
    inv.args = argv
