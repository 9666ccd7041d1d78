"""`run`: stream a command's output from a container, and our stdin into it.

The exit status travels in EXEC_END's `exec_end_reason` ("exit N" / "signal N"); any other
non-empty reason is an error message from cmld. cml-control exits with the command's status;
`control` exits 0 like the original.
"""

from __future__ import annotations

import os
import sys
import threading

from . import wire
from .console import Console
from .failures import ERROR, Fatal
from .session import Session

TYPE_CHECKING = False
if TYPE_CHECKING:
    from .result import Result

INPUT_CHUNK = 4096
D = wire.D


def exit_code_from_reason(reason: str) -> tuple[int, str | None]:
    """(exit code, message for stderr or None)."""
    if not reason:
        return 0, None
    word, _, number = reason.partition(" ")
    if number.isdigit() and number.isascii():
        if word == "exit":
            return int(number), None
        if word == "signal":
            return 128 + int(number), None
    return 1, reason


def _pump_stdin(session: Session, uuid: str, done: threading.Event) -> None:
    import codecs

    fd = sys.stdin.fileno()
    # exec_input is a proto string: decode incrementally, so a multi-byte character split
    # across two reads is not turned into two replacement characters.
    decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
    try:
        while not done.is_set():
            try:
                data = os.read(fd, INPUT_CHUNK)
            except OSError:
                return
            if not data:
                if tail := decoder.decode(b"", final=True):
                    session.send("CONTAINER_EXEC_INPUT", container_uuids=[uuid], exec_input=tail)
                # End of our input: an empty EXEC_INPUT closes the command's stdin (cmld extension;
                # the original has no way to signal EOF).
                session.send("CONTAINER_EXEC_INPUT", container_uuids=[uuid], exec_input="")
                return
            text = decoder.decode(data)
            if text:  # else only the start of a character so far; an empty EXEC_INPUT would mean EOF
                session.send("CONTAINER_EXEC_INPUT", container_uuids=[uuid], exec_input=text)
    except Fatal:
        return  # the connection is gone; the main thread reports it


def run(session: Session, console: Console, uuid: str, argv: list[str], pty: bool) -> Result:
    from .result import Result

    session.send("CONTAINER_EXEC_CMD", container_uuids=[uuid], exec_command=argv[0], exec_args=argv,
                 exec_pty=pty)
    done = threading.Event()
    saved = None
    if pty and os.isatty(0):
        import termios
        import tty

        saved = termios.tcgetattr(0)
        tty.setraw(0)
    threading.Thread(target=_pump_stdin, args=(session, uuid, done), daemon=True).start()
    out = sys.stdout.buffer
    try:
        while True:
            reply = session.receive()
            if reply.code == D["EXEC_OUTPUT"]:
                out.write(reply.msg.get_bytes("exec_output"))
                out.flush()
            elif reply.code == D["EXEC_END"]:
                code, message = exit_code_from_reason(reply.msg.get_str("exec_end_reason"))
                if message:
                    console.log(ERROR, message, message)
                return Result(code == 0, reply, exit_of_run=code)
            elif reply.code == D["RESPONSE"] and reply.has_response() and reply.response == wire.R["CMD_OK"]:
                continue
            else:
                what = reply.response_name if reply.has_response() else reply.code_name
                console.log(ERROR, "Detected unexpected message from cmld. Exiting", f"cmld answered {what}")
                return Result(False, reply, exit_of_run=1)
    finally:
        done.set()
        if saved is not None:
            import contextlib
            import termios

            with contextlib.suppress(termios.error):
                termios.tcsetattr(0, termios.TCSADRAIN, saved)
