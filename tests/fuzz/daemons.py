"""Fuzzing the real daemons over their real sockets: cmld's control socket (with and without a
running container), the in-container service socket of a real container, scd (SOCK_SEQPACKET),
tpm2d's control socket and its TCP 9505 attestation server on a swtpm.

Each input is one request frame (protogen.MessageGen: every command and code, every field, wire
mutations, mutated seeds from the corpus). What is checked, per daemon policy:

- after every input, the daemon answers on the same connection: the reply to the input itself
  where each request gets exactly one (scd, tpm2d), or a probe request sent behind the input
  where some commands answer nothing or stream (cmld's control and service sockets);
- a body that does not decode: answered and the connection kept (cmld, tpm2d), or the
  connection closed (scd), never the other way round;
- after every batch, a known-answer request on a fresh connection (a health probe), a few
  framing attacks (a length at the limit, a truncated frame, an empty body), and the daemon's
  process still alive;
- no hang: every reply within `reply_timeout`;
- no log flood: the bytes a daemon logs for one input stay below `FLOOD_BYTES`;
- no internal error: a handler's traceback in the log is a bug, even if the daemon went on.

A `Finding` is raised for the first failure, with the input that caused it.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import os
import random
import socket
import struct
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from google.protobuf.message import Message

from cml_common import framing
from tests.fuzz import protogen
from tests.fuzz.registry import CORPUS

FLOOD_BYTES = 64 * 1024


class Finding(AssertionError):
    def __init__(self, target: str, what: str, body: bytes | None) -> None:
        self.target = target
        self.what = what
        self.body = body
        super().__init__(f"{target}: {what}" + (f" (input {body.hex()[:400]})" if body is not None else ""))


@dataclass
class Stats:
    target: str
    inputs: int = 0
    malformed: int = 0
    replies: int = 0
    disconnects: int = 0  # expected by the policy (scd's malformed input, framing attacks)
    batches: int = 0
    unsendable: int = 0
    health_probes: int = 0
    seconds: float = 0.0
    max_log_bytes: int = 0
    reply_kinds: set[str] = field(default_factory=set)  # distinct (request code, reply code) pairs
    request_codes: set[str] = field(default_factory=set)

    @property
    def rate(self) -> float:
        return self.inputs / self.seconds if self.seconds else 0.0

    def line(self) -> str:
        return (f"{self.target:<18} {self.inputs:>8} inputs {self.rate:>8.0f}/s  codes {len(self.request_codes):>3}  "
                f"reply kinds {len(self.reply_kinds):>4}  malformed {self.malformed:>6}  expected disconnects "
                f"{self.disconnects:>5}  batches {self.batches:>4}  max log/input {self.max_log_bytes} B")


def corpus_seeds(name: str) -> list[bytes]:
    d = CORPUS / name
    return [p.read_bytes() for p in sorted(d.iterdir())] if d.is_dir() else []


class LogWatch:
    """The bytes a daemon has logged so far (its log files and its stderr)."""

    def __init__(self, paths: Callable[[], list[Path]]) -> None:
        self.paths = paths
        self.last = self.size()

    def size(self) -> int:
        total = 0
        for p in self.paths():
            with contextlib.suppress(OSError):
                total += p.stat().st_size
        return total

    def delta(self) -> int:
        now = self.size()
        d, self.last = now - self.last, now
        return d

    def tracebacks(self) -> list[str]:
        out = []
        for p in self.paths():
            try:
                text = p.read_text(errors="replace")
            except OSError:
                continue
            for chunk in text.split("Traceback (most recent call last):")[1:]:
                out.append(chunk[:1500])
        return out


# ------------------------------------------------------------------------------ transports


class Conn:
    """One client connection, stream or SEQPACKET, with bounded reads."""

    def __init__(self, sock: socket.socket, seqpacket: bool, timeout: float) -> None:
        self.sock = sock
        self.seqpacket = seqpacket
        sock.settimeout(timeout)

    def send(self, body: bytes) -> None:
        if self.seqpacket:
            framing.send_seqpacket(self.sock, body)
        else:
            framing.send_frame(self.sock, body)

    def recv(self) -> bytes | None:
        """A frame; None when the daemon closed the connection. socket.timeout on a hang."""
        try:
            return (framing.recv_seqpacket(self.sock) if self.seqpacket else framing.recv_frame(self.sock))
        except (ConnectionResetError, framing.TruncatedFrame):
            return None

    def close(self) -> None:
        self.sock.close()


def unix_conn(path: Path, *, seqpacket: bool = False, timeout: float = 20.0) -> Conn:
    s = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET if seqpacket else socket.SOCK_STREAM)
    s.settimeout(5)
    s.connect(str(path))
    return Conn(s, seqpacket, timeout)


def tcp_conn(port: int, timeout: float = 20.0) -> Conn:
    s = socket.create_connection(("127.0.0.1", port), timeout=5)
    return Conn(s, False, timeout)


# ------------------------------------------------------------------------------ campaigns


class Campaign:
    """The common loop; a subclass says how to connect, what a reply to expect and how to probe."""

    name = "?"
    request_type: type[Message]
    reply_type: type[Message]
    code_field = "code"
    seqpacket = False
    malformed_closes = False  # the daemon's policy for a body that does not decode
    malformed_budget: int | None = None  # or: closes once this many did not decode on one connection
    reply_timeout = 30.0

    def __init__(self, rng: random.Random, logs: LogWatch, alive: Callable[[], bool]) -> None:
        self.rng = rng
        self.logs = logs
        self.alive = alive
        self.stats = Stats(self.name)
        self.gen = protogen.MessageGen(self.request_type, rng, target_field=self.code_field,
                                       overrides=self.overrides(), seeds=corpus_seeds(self.corpus_name()))
        self.conn: Conn | None = None
        self.malformed_on_conn = 0
        self._tracebacks_seen = len(logs.tracebacks())

    # --- what subclasses say
    def corpus_name(self) -> str:
        return "msg_" + self.name

    def overrides(self) -> protogen.Overrides:
        return protogen.Overrides()

    def connect(self) -> Conn:
        raise NotImplementedError

    def reject(self, req: Message | None) -> bool:
        """Inputs a campaign must not send (e.g. EXIT to tpm2d)."""
        return False

    def exchange(self, conn: Conn, body: bytes, req: Message | None) -> list[bytes] | None:
        """Send one input and collect what answers it; None if the connection closed."""
        conn.send(body)
        rep = conn.recv()
        return None if rep is None else [rep]

    def health(self) -> None:
        """A known-answer request on a fresh connection; raises Finding."""
        raise NotImplementedError

    def after_batch(self) -> None:
        """Restore what the inputs may have changed (a stopped container)."""

    # --- the loop
    def _code_name(self, msg: Message | None) -> str:
        if msg is None:
            return "malformed"
        fd = msg.DESCRIPTOR.fields_by_name[self.code_field]
        value = getattr(msg, self.code_field)
        return fd.enum_type.values_by_number[value].name if value in fd.enum_type.values_by_number else str(value)

    def _reply_name(self, body: bytes) -> str:
        try:
            m = framing.parse(self.reply_type, body)
        except framing.MessageError:
            raise Finding(self.name, "the daemon sent a reply that does not parse", body) from None
        f = m.DESCRIPTOR.fields_by_name.get("code")
        name = self._code_name_of(m, "code") if f is not None else "?"
        if m.DESCRIPTOR.fields_by_name.get("response") is not None and m.HasField("response"):
            name += "/" + self._code_name_of(m, "response")
        return name

    @staticmethod
    def _code_name_of(m: Message, field_name: str) -> str:
        fd = m.DESCRIPTOR.fields_by_name[field_name]
        return fd.enum_type.values_by_number[getattr(m, field_name)].name

    def one(self, body: bytes) -> None:
        try:
            req: Message | None = framing.parse(self.request_type, body)
        except framing.MessageError:
            req = None
        if self.reject(req):
            return
        code = self._code_name(req)
        self.stats.request_codes.add(code)
        if self.conn is None:
            self.conn = self.connect()
            self.malformed_on_conn = 0
        if req is None:
            self.stats.malformed += 1
            self.malformed_on_conn += 1
        try:
            replies = self.exchange(self.conn, body, req)
        except TimeoutError:
            raise Finding(self.name, f"no reply within {self.reply_timeout:g} s (hang) to {code}", body) from None
        except (BrokenPipeError, ConnectionResetError):
            replies = None
        except OSError as e:
            if e.errno != errno.EMSGSIZE:
                raise
            # A SEQPACKET record larger than the socket's send buffer cannot be sent by any
            # client (the kernel refuses it): not an input the daemon can receive.
            self.stats.unsendable += 1
            self.conn.close()  # its length record may be out: this connection is spent
            self.conn = None
            return
        self.stats.inputs += 1
        if replies is None:
            self.conn.close()
            self.conn = None
            over_budget = self.malformed_budget is not None and self.malformed_on_conn >= self.malformed_budget
            if not (req is None and (self.malformed_closes or over_budget)):
                if not self.alive():
                    raise Finding(self.name, f"the daemon died on {code}", body)
                raise Finding(self.name, f"connection closed after {code}; the policy keeps it", body)
            self.stats.disconnects += 1
        else:
            if req is None and self.malformed_closes:
                raise Finding(self.name, "a malformed request was answered; the policy closes", body)
            for r in replies:
                self.stats.reply_kinds.add(f"{code}->{self._reply_name(r)}")
            self.stats.replies += len(replies)
        logged = self.logs.delta()
        self.stats.max_log_bytes = max(self.stats.max_log_bytes, logged)
        if logged > FLOOD_BYTES:
            raise Finding(self.name, f"{logged} bytes of log for one input (flood)", body)

    def framing_attacks(self) -> None:
        """A length at the limit, a truncated frame, an empty body: each on its own connection;
        the daemon must drop or answer them and go on."""
        for raw in (struct.pack(">I", framing.MAX_MESSAGE_SIZE), struct.pack(">I", 100) + b"abc", b"\x00\x00"):
            c = self.connect()
            try:
                if self.seqpacket:
                    c.sock.send(raw[:4])
                    if raw[4:]:
                        c.sock.send(raw[4:])
                else:
                    c.sock.sendall(raw)
                c.sock.shutdown(socket.SHUT_WR)
                while True:
                    try:
                        if not c.sock.recv(65536):
                            break
                    except (TimeoutError, OSError):
                        break
            finally:
                c.close()
            self.stats.disconnects += 1
        self.logs.delta()

    def check_batch(self) -> None:
        if not self.alive():
            raise Finding(self.name, "the daemon process is gone", None)
        self.framing_attacks()
        self.health()
        self.stats.health_probes += 1
        tbs = self.logs.tracebacks()
        if len(tbs) > self._tracebacks_seen:
            raise Finding(self.name, "internal error (traceback) in the daemon's log:\n" + tbs[-1], None)
        self.after_batch()
        self.logs.delta()
        self.stats.batches += 1

    def run(self, n: int, batch: int = 200, deadline: float | None = None) -> Stats:
        t0 = time.monotonic()
        try:
            for i in range(n):
                self.one(self.gen.request())
                if (i + 1) % batch == 0:
                    self.check_batch()
                if deadline is not None and time.monotonic() > deadline:
                    break
            self.check_batch()
        finally:
            self.stats.seconds += time.monotonic() - t0
            if self.conn is not None:
                self.conn.close()
                self.conn = None
        return self.stats


def inputs_from(gen: protogen.MessageGen, n: int) -> Iterator[bytes]:
    for _ in range(n):
        yield gen.request()


def sha256(b: bytes) -> bytes:
    return hashlib.sha256(b).digest()


def env_int(name: str, default: int) -> int:
    return int(os.environ.get(name, default))
