"""`fetchml jupyter open`'s local forward: a loopback HTTP + WebSocket server that relays
everything under a service's proxy path to the fetchml server's proxy, adding the user's API key.

A browser cannot add X-API-Key to its requests (nor to a WebSocket), so the forward adds it: the
browser talks to http://127.0.0.1:<port>/v1/jupyter/services/<id>/proxy/ as if it were the
Jupyter server itself. Whoever can reach the forward acts with the user's key, hence:
- it listens on a loopback address only, unless the caller explicitly allows another;
- it answers only requests whose Host is its own address (a web page that rebinds a DNS name
  to 127.0.0.1 sends its own name), and whose Origin, when there is one, is its own (another
  site's page may send requests and open WebSockets to any local port; Jupyter's own Origin
  check cannot help, the proxies drop the header before it).
"""

from __future__ import annotations

import ipaddress
import threading
from collections.abc import Callable
from typing import Any

LOOPBACK_NAMES = frozenset({"localhost", "127.0.0.1", "::1"})
STOP_POLL_SECONDS = 0.2
# What browsers may send to a local Jupyter: a notebook or a data file upload.
MAX_BODY_BYTES = 256 * 1024 * 1024


def is_loopback(host: str) -> bool:
    if host in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _netloc(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


class _Guarded:
    """Host and Origin checks in front of the forwarder (see the module docstring)."""

    def __init__(self, forwarder: Any, prefix: str, allowed_hosts: set[str] | None) -> None:
        self.forwarder = forwarder
        self.prefix = prefix
        self.allowed_hosts = allowed_hosts  # None: any Host (a non-loopback bind the caller allowed)

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        from fetchml.client.forward import send_error
        from fetchml.core.errors import ForbiddenError, NotFoundError

        if scope["type"] not in ("http", "websocket"):
            return  # no lifespan events: uvicorn runs with lifespan="off"
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers", [])}
        host = headers.get("host", "").lower()
        origin = headers.get("origin")
        if self.allowed_hosts is not None and host not in self.allowed_hosts:
            await send_error(scope, send, ForbiddenError("Unknown Host for this local forward"))
            return
        if origin is not None and origin.lower() not in (f"http://{host}", f"ws://{host}"):
            await send_error(scope, send, ForbiddenError("Requests from other sites are refused"))
            return
        path: str = scope["path"]
        if not (path.startswith(self.prefix) or path == self.prefix.rstrip("/")):
            await send_error(scope, send, NotFoundError(f"Only {self.prefix} is forwarded here"))
            return
        await self.forwarder(scope, receive, send)


def run_forward(
    server_url: str,
    api_key: str,
    service_id: str,
    port: int = 0,
    host: str = "127.0.0.1",
    on_ready: Callable[[str], None] | None = None,
    stop: threading.Event | None = None,
    *,
    allow_non_loopback: bool = False,
) -> None:
    """Serves the forward on host:port (0: a free port) until `stop` is set or Ctrl-C.
    `on_ready(local_url)` runs once it listens, with the service's URL on the forward.
    ValueError for a non-loopback host unless `allow_non_loopback` (anyone who reaches the
    forward acts with `api_key`); OSError when the address cannot be bound."""
    import asyncio
    import socket

    import uvicorn

    from fetchml.client.forward import Forwarder
    from fetchml.core.jupyter import proxy_path

    if not is_loopback(host) and not allow_non_loopback:
        raise ValueError(
            f"Refusing to listen on {host}: anyone who can reach the forward acts with your API key. "
            "Use a loopback address (127.0.0.1, ::1, localhost)."
        )
    prefix = proxy_path(service_id)
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        sock.listen(128)
        sock.set_inheritable(True)
    except OSError:
        sock.close()
        raise
    actual = int(sock.getsockname()[1])
    allowed = None
    if is_loopback(host):
        allowed = {_netloc(h, actual) for h in ("localhost", "127.0.0.1", "::1", host)}
    forwarder = Forwarder(
        server_url.rstrip("/") + prefix,
        prefix,
        headers={"X-API-Key": api_key},
        max_body_bytes=MAX_BODY_BYTES,
    )
    config = uvicorn.Config(
        _Guarded(forwarder, prefix, allowed),
        lifespan="off",
        log_level="warning",
        access_log=False,
        server_header=False,
        ws_max_size=forwarder.max_ws_message_bytes,
        timeout_graceful_shutdown=2,
    )
    server = uvicorn.Server(config)
    local_url = f"http://{_netloc(host, actual)}{prefix}"

    failed: list[BaseException] = []

    async def main() -> None:
        async def watch() -> None:
            while not server.started and not server.should_exit:
                await asyncio.sleep(0.02)
            if server.started and on_ready is not None:
                try:
                    on_ready(local_url)
                except BaseException as exc:
                    failed.append(exc)
                    server.should_exit = True
                    return
            while not server.should_exit:
                if stop is not None and stop.is_set():
                    server.should_exit = True
                await asyncio.sleep(STOP_POLL_SECONDS)

        watcher = asyncio.create_task(watch())
        try:
            await server.serve(sockets=[sock])
        finally:
            watcher.cancel()
            await forwarder.aclose()

    try:
        asyncio.run(main())
    except KeyboardInterrupt:
        pass  # Ctrl-C: uvicorn has shut down already and re-raised the signal
    finally:
        sock.close()
    if failed:
        raise failed[0]
