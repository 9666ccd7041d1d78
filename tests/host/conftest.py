"""Fixtures shared by the host tests."""

from __future__ import annotations

import functools
import http.server
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from ..conftest import DaemonFactory
from ..testnet import server_in_netns
from .containers import demo_guestos


@pytest.fixture(scope="session")
def guestos_src(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The demo busybox GuestOS, built once per test process (it is only ever copied from)."""
    return demo_guestos(tmp_path_factory.mktemp("guestos"))


@pytest.fixture
def http_root(tmp_path: Path, cmld_factory: DaemonFactory) -> Iterator[tuple[Path, str]]:
    """A web server on the loopback of cmld's network namespace (the test's own, where cmld
    fetches from) serving a directory: the update server."""
    root = tmp_path / "www"
    root.mkdir()
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(root))
    server = server_in_netns(cmld_factory.cmld_netns().path,
                             lambda: http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield root, f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)
