"""`control`: the original GyroidOS client's name and behaviour, on the same code as cml-control.

What a script for the original sees, it sees here: the same options (grammar.py), the reply
dumped in protobuf text format on stdout, exit status 0 after any reply whatever it says, the
usage text on stdout and exit status 255 for a usage error, log lines on stderr in the original's
`[<pid>] <LEVEL> <message>` format, and at its FATAL paths (an unknown container, a missing
socket file, PINs that do not match...) the message, `Aborting...`, and death by SIGABRT without
a core file. Additions it accepts (the original refuses them): --wait, --wait-timeout, --json,
--timeout, and -h/--help after the command.
"""

from __future__ import annotations

import os
import sys

from . import grammar
from .commands import Runner
from .console import Console
from .failures import EXIT_USAGE_ORIGINAL, Fatal
from .reply import Reply

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import NoReturn

PRIORITIES = {"FATAL": "<FATAL>", "ERROR": "<ERROR>", "WARN": "<WARN> ", "INFO": "<INFO> "}
LOG_BUFFER = 4096  # logf formats each message into 4096 bytes


def log_line(level: str, msg: str) -> None:
    """logf_test_write: `[<pid>] <LEVEL> <message>` on stderr, flushed."""
    text = msg.encode("utf-8", "surrogateescape")[:LOG_BUFFER - 1]
    sys.stderr.flush()
    sys.stderr.buffer.write(b"[%d] %s %s\n" % (os.getpid(), PRIORITIES[level].encode(), text))
    sys.stderr.buffer.flush()


class OriginalConsole(Console):
    def __init__(self, as_json: bool) -> None:
        self.as_json = as_json

    def dump(self, reply: Reply) -> None:
        sys.stdout.write(reply.json() if self.as_json else reply.text())
        sys.stdout.flush()

    def log(self, level: str, original: str | None, ours: str | None) -> None:
        if original is not None:
            log_line(level, original)

    def say(self, original: str, ours: str | None) -> None:
        sys.stdout.write(original + "\n")
        sys.stdout.flush()

    def ask(self, prompt: str) -> str:
        from .prompts import ask_original

        return ask_original(prompt)


def abort() -> NoReturn:
    """abort() as the original ends a FATAL: SIGABRT, but no core file of a client."""
    import contextlib
    import resource

    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(OSError):
            stream.flush()
    _, hard = resource.getrlimit(resource.RLIMIT_CORE)
    resource.setrlimit(resource.RLIMIT_CORE, (0, hard))
    try:  # also keeps a core_pattern pipe (systemd-coredump) from being invoked
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(4, 0, 0, 0, 0)  # PR_SET_DUMPABLE, 0
    except (OSError, AttributeError):
        pass
    os.abort()


def fatal(e: Fatal) -> NoReturn:
    for level, text in e.preface:
        log_line(level, text)
    log_line("FATAL", e.original)
    log_line("FATAL", "Aborting...")
    abort()


def usage(prog: str, e: grammar.UsageError | None = None) -> int:
    """The original's print_usage(): getopt's complaint on stderr first, the text on stdout."""
    from .usage import original_usage

    if e is not None and e.info:
        log_line("INFO", e.info)
    if e is not None and e.diagnostic:
        sys.stderr.write(e.diagnostic + "\n")
        sys.stderr.flush()
    sys.stdout.write(original_usage(prog))
    sys.stdout.flush()
    return EXIT_USAGE_ORIGINAL


def socket_file_exists(path: str) -> bool:
    try:
        os.stat(path)
    except (OSError, ValueError):
        return False
    return True


def die_of_signal(signum: int) -> NoReturn:
    """End as a C program without a handler for `signum` does."""
    import signal

    signal.signal(signum, signal.SIG_DFL)
    os.kill(os.getpid(), signum)
    os._exit(128 + signum)  # not reached


def main(argv: list[str] | None = None) -> int:
    """The console script (argv None) ends the process itself, see quick_exit.py."""
    try:
        code = _main(argv)
        sys.stdout.flush()
    except BrokenPipeError:
        # The original is killed by SIGPIPE when its reader goes away (`control list | head -0`).
        die_of_signal(13)
    except KeyboardInterrupt:
        # ... and by SIGINT on ^C: it has no handler.
        die_of_signal(2)
    if argv is None:
        from .quick_exit import flush_and_exit

        flush_and_exit(code)
    return code


def _main(argv: list[str] | None) -> int:
    prog = sys.argv[0] if sys.argv and sys.argv[0] else "control"
    args = sys.argv[1:] if argv is None else argv
    try:
        inv, rest = grammar.parse_global(args, prog)
    except grammar.UsageError as e:
        return usage(prog, e)
    if inv.help:
        return usage(prog)
    if not socket_file_exists(inv.socket):
        fatal(Fatal(f"Could not find socket file {inv.socket}. Aborting.\n"))
    try:
        grammar.parse_command(inv, rest)
    except grammar.UsageError as e:
        return usage(prog, e)
    if inv.help:
        return usage(prog)
    runner = Runner(inv, OriginalConsole(inv.json))
    try:
        result = runner.execute()
    except grammar.UsageError as e:
        return usage(prog, e)
    except Fatal as e:
        fatal(e)
    finally:
        runner.close()
    return result.status if result.status is not None else 0


if __name__ == "__main__":
    sys.exit(main())
