"""A SmartCard-HSM card emulator speaking the vpcd TCP protocol (machine.md §5), for scd tests.

Implements the APDUs scd uses: SELECT the applet, VERIFY / CHANGE REFERENCE DATA of the user PIN
with a retry counter of 3, GENERATE SYMMETRIC KEY (master key) and DERIVE SYMMETRIC KEY
`80 78 01 99` (here HMAC-SHA256(master, label); the real card's derivation differs, which scd
cannot tell). Every vpcd message is a 2-byte big-endian length and a payload; 1-byte payloads are
control (0 off, 1 on, 2 reset, 4 ATR). Run inside the pcscd network namespace:

    python vpcd_card.py [--port 35963] [--transport-pin 648219]
"""

from __future__ import annotations

import argparse
import hashlib
import hmac
import os
import socket
import struct
import sys
import time

AID = bytes.fromhex("E82B0601040181C31F0201")
ATR = bytes.fromhex("3B9513810180 73FF01000B".replace(" ", ""))


class Card:
    def __init__(self, pin: bytes) -> None:
        self.pin = pin
        self.retries = 3
        self.verified = False
        self.selected = False
        self.master: bytes | None = None

    def reset(self) -> None:
        self.verified = self.selected = False

    def _wrong(self) -> bytes:
        self.retries -= 1
        self.verified = False
        return b"\x69\x83" if self.retries <= 0 else bytes([0x63, 0xC0 | self.retries])

    def apdu(self, c: bytes) -> bytes:
        if len(c) < 4:
            return b"\x67\x00"
        cla, ins, p1, p2 = c[:4]
        data = c[5:5 + c[4]] if len(c) > 5 else b""
        if (cla, ins) == (0x00, 0xA4):
            if data != AID:
                return b"\x6a\x82"
            self.selected, self.verified = True, False
            return b"\x90\x00"
        if not self.selected:
            return b"\x69\x85"
        if (cla, ins, p2) == (0x00, 0x20, 0x81):
            if self.retries <= 0:
                return b"\x69\x83"
            if not data:
                return b"\x90\x00" if self.verified else bytes([0x63, 0xC0 | self.retries])
            if hmac.compare_digest(data, self.pin):
                self.retries, self.verified = 3, True
                return b"\x90\x00"
            return self._wrong()
        if (cla, ins, p2) == (0x00, 0x24, 0x81):
            if self.retries <= 0:
                return b"\x69\x83"
            n = len(self.pin)
            if len(data) > n and hmac.compare_digest(data[:n], self.pin):
                self.pin, self.retries, self.verified = data[n:], 3, True
                return b"\x90\x00"
            return self._wrong()
        if (cla, ins, p2) == (0x00, 0x48, 0xB0):
            if not self.verified:
                return b"\x69\x82"
            self.master = os.urandom(32)
            return b"\x90\x00"
        if (cla, ins, p1, p2) == (0x80, 0x78, 0x01, 0x99):
            if not self.verified:
                return b"\x69\x82"
            if self.master is None:
                return b"\x6a\x88"
            return hmac.new(self.master, data, hashlib.sha256).digest() + b"\x90\x00"
        return b"\x6d\x00"


def recv_exact(s: socket.socket, n: int) -> bytes:
    buf = b""
    while len(buf) < n:
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_QUICKACK, 1)  # 48 ms -> 0.08 ms per APDU
        chunk = s.recv(n - len(buf))
        if not chunk:
            raise EOFError
        buf += chunk
    return buf


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--port", type=int, default=35963)
    ap.add_argument("--transport-pin", default="648219")
    args = ap.parse_args()
    card = Card(args.transport_pin.encode())
    deadline = time.monotonic() + 10
    while True:
        try:
            s = socket.create_connection(("127.0.0.1", args.port))
            break
        except OSError:
            if time.monotonic() > deadline:
                print("vpcd not reachable", file=sys.stderr)
                return 1
            time.sleep(0.02)
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    print("card inserted", flush=True)
    try:
        while True:
            (n,) = struct.unpack(">H", recv_exact(s, 2))
            msg = recv_exact(s, n)
            if n == 1:
                if msg[0] in (0, 2):
                    card.reset()
                if msg[0] == 4:
                    s.sendall(struct.pack(">H", len(ATR)) + ATR)
                continue
            rsp = card.apdu(msg)
            s.sendall(struct.pack(">H", len(rsp)) + rsp)
    except (EOFError, OSError):
        return 0


if __name__ == "__main__":
    sys.exit(main())
