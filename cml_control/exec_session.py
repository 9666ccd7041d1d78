"""`cml-control run`: stream a command's output from a container, and our stdin into it.

The exit status travels in EXEC_END's `exec_end_reason` ("exit N" / "signal N"); any other
non-empty reason is an error message from cmld.
"""

from __future__ import annotations

import codecs
import contextlib
import os
import re
import sys
import termios
import threading
import tty

from cml_common.messages.control_pb2 import ControllerToDaemon, DaemonToController

from .client import ControlClient, ControlError

INPUT_CHUNK = 4096
_EXIT = re.compile(r"^exit (\d+)$")
_SIGNAL = re.compile(r"^signal (\d+)$")


def exit_code_from_reason(reason: str) -> tuple[int, str | None]:
    """(exit code, message for stderr or None)."""
    if not reason:
        return 0, None
    if m := _EXIT.match(reason):
        return int(m.group(1)), None
    if m := _SIGNAL.match(reason):
        return 128 + int(m.group(1)), None
    return 1, reason


def _pump_stdin(client: ControlClient, uuid: str, done: threading.Event) -> None:
    fd = sys.stdin.fileno()
    # exec_input is a proto string: decode incrementally, so a multi-byte character split
    # across two reads is not turned into two replacement characters.
    decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
    while not done.is_set():
        try:
            data = os.read(fd, INPUT_CHUNK)
        except OSError:
            return
        if not data:
            if tail := decoder.decode(b"", final=True):
                with contextlib.suppress(ControlError):
                    client.send(ControllerToDaemon(command=ControllerToDaemon.CONTAINER_EXEC_INPUT,
                                                   container_uuids=[uuid], exec_input=tail))
            # End of our input: an empty EXEC_INPUT closes the command's stdin (cmld extension;
            # the original has no way to signal EOF).
            with contextlib.suppress(ControlError):
                client.send(ControllerToDaemon(command=ControllerToDaemon.CONTAINER_EXEC_INPUT,
                                               container_uuids=[uuid], exec_input=""))
            return
        text = decoder.decode(data)
        if not text:
            continue  # only the start of a character so far; an empty EXEC_INPUT would mean EOF
        msg = ControllerToDaemon(
            command=ControllerToDaemon.CONTAINER_EXEC_INPUT, container_uuids=[uuid], exec_input=text,
        )
        try:
            client.send(msg)
        except ControlError:
            return


def run(client: ControlClient, uuid: str, argv: list[str], pty: bool) -> int:
    client.sock.settimeout(None)  # a session lasts as long as the command
    client.send(ControllerToDaemon(
        command=ControllerToDaemon.CONTAINER_EXEC_CMD, container_uuids=[uuid],
        exec_command=argv[0], exec_args=argv, exec_pty=pty,
    ))
    done = threading.Event()
    saved = None
    if pty and sys.stdin.isatty():
        saved = termios.tcgetattr(sys.stdin.fileno())
        tty.setraw(sys.stdin.fileno())
    threading.Thread(target=_pump_stdin, args=(client, uuid, done), daemon=True).start()
    out = sys.stdout.buffer
    try:
        while True:
            reply = client.receive()
            if reply.code == DaemonToController.EXEC_OUTPUT:
                out.write(reply.exec_output)
                out.flush()
            elif reply.code == DaemonToController.EXEC_END:
                code, message = exit_code_from_reason(reply.exec_end_reason)
                if message:
                    sys.stderr.write(f"cml-control: {message}\n")
                return code
            elif reply.code == DaemonToController.RESPONSE:
                name = DaemonToController.Response.Name(reply.response)
                sys.stderr.write(f"cml-control: cmld answered {name}\n")
                if reply.response != DaemonToController.CMD_OK:
                    return 1
    finally:
        done.set()
        if saved is not None:
            with contextlib.suppress(termios.error):
                termios.tcsetattr(sys.stdin.fileno(), termios.TCSADRAIN, saved)
