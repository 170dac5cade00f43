"""The test harness itself: a test server must be the one the test talks to."""

from __future__ import annotations

import socket
from pathlib import Path

import httpx

from tests.harness import ServerHandle, free_port


def test_a_server_whose_port_was_taken_starts_on_another(tmp_path: Path) -> None:
    # Another process listening on the port the handle picked: the race between free_port()
    # and the server's bind that once made a module's tests talk to another test's server.
    taken = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    taken.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    taken.bind(("127.0.0.1", free_port()))
    taken.listen(8)
    port = taken.getsockname()[1]
    srv = ServerHandle(data_dir=tmp_path / "srv", port=port)
    try:
        srv.start()
        assert srv.port != port
        assert "address already in use" in (tmp_path / "srv" / f"server-{port}.log").read_text()
        assert httpx.get(srv.url + "/health", timeout=5).status_code == 200
    finally:
        srv.stop()
        taken.close()
