"""Forwarding to a remote collector (CR 6.2): RFC 5424 over TLS (RFC 5425), at least once, in
journal order, from a cursor kept on disk.

The forwarder reads the journal from the last sequence number the collector is known to have,
sends a batch and moves the cursor only once the collector's TCP stack has acknowledged every
byte of it (the socket's send queue is empty, TIOCOUTQ). While the collector is away nothing is
dropped: the journal is the buffer, and the forwarder retries with a growing pause (1 s to 30 s)
and resumes from the cursor. A batch that was in flight when a connection broke is sent again;
each message carries its sequence number, so a duplicate is recognisable. The collector's
certificate is checked against `audit_forward_ca` and its name; with `audit_forward_cert` and
`audit_forward_key` the device authenticates itself too.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import json
import logging
import socket
import ssl
import struct
import termios
from dataclasses import dataclass
from pathlib import Path

from cml_common.auditlog.entry import EntryError, parse_line
from cml_common.fsutil import write_atomic

from .journal import Journal
from .syslog import format_entry, octet_frame

log = logging.getLogger(__name__)
BATCH = 200
ACK_TIMEOUT = 10.0


@dataclass(frozen=True)
class ForwardConfig:
    host: str
    port: int
    ca: Path
    server_name: str
    cert: Path | None = None
    key: Path | None = None


def tls_context(cfg: ForwardConfig) -> ssl.SSLContext:
    ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=str(cfg.ca))
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    if cfg.cert is not None:
        ctx.load_cert_chain(str(cfg.cert), str(cfg.key) if cfg.key else None)
    return ctx


def unacked(sock: socket.socket) -> int:
    """Bytes the peer has not acknowledged yet (Linux TIOCOUTQ = SIOCOUTQ)."""
    return int(struct.unpack("i", fcntl.ioctl(sock.fileno(), termios.TIOCOUTQ, b"\0\0\0\0"))[0])


class Forwarder:
    def __init__(self, journal: Journal, cfg: ForwardConfig, state_path: Path, hostname: str) -> None:
        self.journal = journal
        self.cfg = cfg
        self.state_path = state_path
        self.hostname = hostname
        self.cursor = self._load_cursor()
        self.wake = asyncio.Event()
        self.connected = False
        self.sent = 0
        self.last_error = ""
        self._task: asyncio.Task[None] | None = None
        self._closing = False

    def _load_cursor(self) -> int:
        try:
            v = json.loads(self.state_path.read_text()).get("forwarded_seq", 0)
            return v if isinstance(v, int) and v >= 0 else 0
        except FileNotFoundError:
            return 0
        except (OSError, ValueError, AttributeError) as e:
            log.error("audit forwarding: unreadable cursor %s (%s); starting from the beginning", self.state_path, e)
            return 0

    def _save_cursor(self) -> None:
        write_atomic(self.state_path, json.dumps({"forwarded_seq": self.cursor}).encode(), mode=0o600)

    def start(self) -> None:
        self._task = asyncio.ensure_future(self._run())

    async def close(self, flush: float = 3.0) -> None:
        """Give a connected forwarder a moment to deliver the last entries (cmld-stop and the
        final checkpoint); what is left goes at the next start, from the cursor."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + flush
        while self.connected and self.cursor < self.journal.last_seq and loop.time() < deadline:
            self.wake.set()
            await asyncio.sleep(0.05)
        self._closing = True
        self.wake.set()
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)

    def notify(self) -> None:
        self.wake.set()

    async def _run(self) -> None:
        pause = 1.0
        while not self._closing:
            try:
                await self._session()
                pause = 1.0
            except (OSError, ssl.SSLError, TimeoutError, ConnectionError) as e:
                why = f"{type(e).__name__}: {e}"
                if why != self.last_error:
                    log.warning("audit forwarding to %s:%d: %s; retrying, records wait in the journal",
                                self.cfg.host, self.cfg.port, why)
                    self.last_error = why
            self.connected = False
            await asyncio.sleep(pause)
            pause = min(pause * 2, 30.0)

    async def _session(self) -> None:
        ctx = tls_context(self.cfg)
        reader, writer = await asyncio.wait_for(asyncio.open_connection(
            self.cfg.host, self.cfg.port, ssl=ctx, server_hostname=self.cfg.server_name), ACK_TIMEOUT)
        self.connected = True
        self.last_error = ""
        log.info("audit forwarding: connected to %s:%d, from seq %d", self.cfg.host, self.cfg.port, self.cursor + 1)
        try:
            while not self._closing:
                lines = self.journal.read_after(self.cursor, BATCH)
                if not lines:
                    self.wake.clear()
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(self.wake.wait(), 5.0)
                    if reader.at_eof():
                        raise ConnectionError("the collector closed the connection")
                    continue
                last = self.cursor
                for line in lines:
                    try:
                        e = parse_line(line)
                    except EntryError as err:
                        log.error("audit forwarding: journal entry after seq %d unreadable (%s); skipped", last, err)
                        last += 1
                        continue
                    writer.write(octet_frame(format_entry(e, self.hostname)))
                    last = e.seq
                await writer.drain()
                await self._acknowledged(writer, reader)
                self.sent += last - self.cursor
                self.cursor = last
                self._save_cursor()
        finally:
            writer.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(writer.wait_closed(), 2)

    async def _acknowledged(self, writer: asyncio.StreamWriter, reader: asyncio.StreamReader) -> None:
        sock = writer.get_extra_info("socket")
        loop = asyncio.get_running_loop()
        deadline = loop.time() + ACK_TIMEOUT
        while unacked(sock) > 0:
            if reader.at_eof() or writer.is_closing():
                raise ConnectionError("the collector went away before acknowledging")
            if loop.time() > deadline:
                raise TimeoutError("the collector did not acknowledge within 10 s")
            await asyncio.sleep(0.02)
