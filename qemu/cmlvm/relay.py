"""`python relay.py PORT`: one guest TCP connection relayed to 127.0.0.1:PORT on the host.

QEMU runs it for each connection the guest opens to a `guestfwd` address (the `cmd:` form, see
`runner.ExtraNic`), with the connection on its stdin and stdout. Why not QEMU's `tcp:` chardev
form: that connects to the host server once, when QEMU starts, shares that one stream among all
guest connections, and never passes the server's close on to the guest, so a guest client that
waits for the end of the response (busybox `nc`, any HTTP/1.0 client) waits forever. Here each
guest connection gets its own host connection, the guest's half-close reaches the server, and
the server's close ends this process, which QEMU's user network turns into the guest's FIN.
"""

from __future__ import annotations

import os
import selectors
import socket
import sys

CHUNK = 65536
IDLE_SECONDS = 300  # nothing either way for this long: give up (no relay outlives a forgotten peer)


def relay(port: int) -> int:
    sock = socket.create_connection(("127.0.0.1", port), timeout=30)
    sock.settimeout(None)
    sel = selectors.DefaultSelector()
    sel.register(0, selectors.EVENT_READ)
    sel.register(sock, selectors.EVENT_READ)
    guest_open = True
    while True:
        ready = sel.select(IDLE_SECONDS)
        if not ready:
            print(f"relay: nothing relayed for {IDLE_SECONDS} s, closing", file=sys.stderr)
            return 1
        for key, _ in ready:
            if key.fileobj == 0:
                data = os.read(0, CHUNK)
                if data:
                    sock.sendall(data)
                elif guest_open:  # the guest half-closed: pass it on, keep reading the answer
                    guest_open = False
                    sel.unregister(0)
                    sock.shutdown(socket.SHUT_WR)
            else:
                data = sock.recv(CHUNK)
                if not data:  # the server closed: so does the guest's connection, when this exits
                    return 0
                view = memoryview(data)
                while view:
                    view = view[os.write(1, view):]


if __name__ == "__main__":
    sys.exit(relay(int(sys.argv[1])))
