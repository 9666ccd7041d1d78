"""How the command layer talks to the user. `control` (control_main.py) and `cml-control`
(main.py) each implement it: same commands, two presentations."""

from __future__ import annotations

TYPE_CHECKING = False
if TYPE_CHECKING:
    from .reply import Reply


class Console:
    def dump(self, reply: Reply) -> None:
        """A reply the original prints with protobuf_dump_message."""
        raise NotImplementedError

    def log(self, level: str, original: str | None, ours: str | None) -> None:
        """A log line: `original` is what the original logs at `level` (None: it logs nothing),
        `ours` what cml-control says on stderr (None: nothing)."""
        raise NotImplementedError

    def say(self, original: str, ours: str | None) -> None:
        """A line the original prints on stdout with printf (PIN reader notes)."""
        raise NotImplementedError

    def ask(self, prompt: str) -> str:
        """A PIN, without echo."""
        raise NotImplementedError
