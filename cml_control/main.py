"""cml-control: the command-line client of cmld, compatible with GyroidOS `control`.

It reads every command line the original `control` reads, with the same meaning (grammar.py),
and sends the same requests (commands.py). Replies are printed in protobuf text format on stdout
exactly as the original prints them, or as JSON lines with --json; diagnostics go to stderr.
Unlike the original it says how things went in its exit status: 0 success, 1 cmld refused or
failed, 2 usage error, 3 cmld unreachable or a protocol error, 4/5 for --wait (failures.py).

Start-up is kept small on purpose (scripts poll `state` in loops): only the modules a command
needs are imported, and the protobuf runtime only for replies the fast codec does not cover.
"""

from __future__ import annotations

import os
import sys

from . import grammar
from .commands import Runner
from .console import Console
from .failures import EXIT_FAILED, EXIT_OK, EXIT_USAGE, Fatal
from .reply import Reply
from .result import reply_ok
from .wire import D

PROG = "cml-control"


def info(msg: str) -> None:
    sys.stderr.write(f"{PROG}: {msg}\n")
    sys.stderr.flush()


class CmlConsole(Console):
    def __init__(self, as_json: bool) -> None:
        self.as_json = as_json

    def dump(self, reply: Reply) -> None:
        sys.stdout.write(reply.json() if self.as_json else reply.text())
        sys.stdout.flush()

    def log(self, level: str, original: str | None, ours: str | None) -> None:
        if ours:
            info(ours)

    def say(self, original: str, ours: str | None) -> None:
        if ours:
            info(ours)

    def ask(self, prompt: str) -> str:
        from .prompts import PromptError, ask_strict

        try:
            return ask_strict(prompt)
        except PromptError as e:
            raise Fatal(str(e)) from None


def _audit(argv: list[str]) -> int | None:
    """`audit` (extension) has its own small grammar; None when the command is another."""
    try:
        inv, rest = grammar.parse_global(argv, PROG)
    except grammar.UsageError:
        return None
    if inv.help or rest[:1] != ["audit"]:
        return None
    from .audit_cli import run as run_audit

    return run_audit(inv.socket, rest[1:], inv.json, inv.timeout)


def usage_error(reason: str) -> int:
    info(reason)
    info(f"'{PROG} --help' lists the commands")
    return EXIT_USAGE


def main(argv: list[str] | None = None) -> int:
    """The console script (argv None) ends the process itself, see quick_exit.py."""
    code = run(sys.argv[1:] if argv is None else argv)
    if argv is None:
        from .quick_exit import flush_and_exit

        flush_and_exit(code)
    return code


def run(argv: list[str]) -> int:
    if "audit" in argv:
        audit = _audit(argv)
        if audit is not None:
            return audit
    try:
        inv = grammar.parse(argv, PROG)
    except grammar.UsageError as e:
        return usage_error(e.diagnostic.removeprefix(PROG + ": ") if e.diagnostic else e.reason)
    if inv.help or inv.help_ignored:
        from .usage import help_text

        sys.stdout.write(help_text(PROG))
        return EXIT_OK
    runner = Runner(inv, CmlConsole(inv.json))
    try:
        result = runner.execute()
    except grammar.UsageError as e:
        return usage_error(e.reason)
    except Fatal as e:
        info(e.detail)
        return e.code
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        # stdout's reader went away: nothing more to say; keep the interpreter's exit flush quiet.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_OK
    finally:
        runner.close()
    reply = result.reply
    if reply is not None and reply.code == D["RESPONSE"] and reply.has_response() and not reply_ok(reply):
        info(f"cmld answered {reply.response_name}")
    if result.status is not None:
        return result.status
    if result.exit_of_run is not None:
        return result.exit_of_run
    return EXIT_OK if result.ok else EXIT_FAILED


if __name__ == "__main__":
    sys.exit(main())
