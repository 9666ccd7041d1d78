"""Log lines a container cannot forge: every control character escaped, long strings clipped.

A daemon logs strings a container chose: the path of a refused mknod, a service's message, the
arguments of an exec session, the names in a config c0 pushes. A newline among them would start
a line that looks like the daemon's own, and other control characters can rewrite what a terminal
shows. The daemons' log formatter (`logsetup.CmlFormatter`) passes every message through `escape`, so
one record is always exactly one line whatever its arguments hold. Tracebacks keep their lines,
each indented by a tab, so none of them can look like the start of a record. Call sites that log a
container's string also `clip` it to a bounded length.

A backslash itself is not escaped: `\\n` in a log line is either an escaped newline or the two
characters a container wrote. Either way no line was forged.
"""

from __future__ import annotations

_NAMED = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}
CLIP = 200  # characters of one container string shown in a log line


def _escape_char(ch: str) -> str:
    if ch in _NAMED:
        return _NAMED[ch]
    code = ord(ch)
    if code < 0x100:
        return f"\\x{code:02x}"
    if code < 0x10000:
        return f"\\u{code:04x}"
    return f"\\U{code:08x}"


def escape(text: str) -> str:
    """`text` with every character that is not printable (controls, line and paragraph separators,
    format characters such as bidi overrides) replaced by its backslash escape. The space stays."""
    if text.isprintable():
        return text
    return "".join(ch if ch.isprintable() else _escape_char(ch) for ch in text)


def clip(value: str | bytes, limit: int = CLIP) -> str:
    """A container's string for a log line: decoded (undecodable bytes as \\xNN), escaped, and cut
    to `limit` characters with the length of the rest."""
    text = value.decode("utf-8", "backslashreplace") if isinstance(value, bytes) else value
    text = escape(text)
    if len(text) > limit:
        return f"{text[:limit]}...(+{len(text) - limit} chars)"
    return text


def indent_lines(text: str) -> str:
    """A multi-line block (a traceback) under a record: each line escaped and tab-indented."""
    return "\n".join("\t" + escape(line) for line in text.split("\n"))
