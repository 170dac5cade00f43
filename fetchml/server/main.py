"""`fetchml serve`: migrate, start the writer, serve HTTP until told to stop."""

from __future__ import annotations

import contextlib
import gc
import logging
import sys
import threading
from collections.abc import Callable
from typing import Any

from fetchml.host.settings import Settings
from fetchml.server.app import create_asgi
from fetchml.services.wiring import Services

log = logging.getLogger("fetchml.server")

# Given the started services and the server's own base URL, start something that lives next
# to the server (the embedded worker) and return how to stop it.
Companion = Callable[[Services, str], Callable[[], None]]


def configure_logging(level: str) -> None:
    logging.basicConfig(
        level=level.upper(),
        stream=sys.stderr,
        format="%(asctime)s %(levelname)s %(name)s %(message)s",
    )
    logging.getLogger("httpx").setLevel(logging.WARNING)
    # alembic logs a dozen lines at INFO on every start (its plugins, its context); the schema
    # upgrade itself is reported by fetchml.store.migrate in one line.
    logging.getLogger("alembic").setLevel(logging.WARNING)


def _tune_runtime() -> None:
    # Everything allocated so far lives for the whole process: keep it out of the cyclic
    # collector's full passes, and collect young objects less often. Under a submission burst
    # the default thresholds cost several ms of pause per full pass.
    gc.collect()
    gc.freeze()
    gc.set_threshold(20_000, 20, 20)
    # The event loop and the writer thread share the GIL; a shorter switch interval keeps a
    # long commit batch from holding request handling back for the default 5 ms slices.
    sys.setswitchinterval(0.001)
    _cap_malloc_arenas()


def _cap_malloc_arenas() -> None:
    """Two glibc malloc arenas instead of one per thread (up to 8 per core): the request threads
    then reuse each other's freed memory instead of each keeping its own high-water mark. The
    GIL runs one thread's Python at a time, so more arenas buy no speed (bench/scale: the RSS
    after the load, 4-10 MB less)."""
    import ctypes

    m_arena_max = -8  # glibc's malloc.h; elsewhere (no glibc) nothing changes
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6").mallopt(m_arena_max, 2)


def build(settings: Settings) -> tuple[Services, Any]:
    """Started services and a uvicorn.Server ready to run (in this thread or another)."""
    import uvicorn

    from fetchml.server.coalesce import JoinedWritesHttpToolsProtocol

    services = Services(settings)
    services.start()
    config = uvicorn.Config(
        create_asgi(services),
        host=settings.host,
        port=settings.port,
        access_log=False,  # our TraceMiddleware writes the access line, with the trace id
        log_level=settings.log_level.lower(),
        log_config=None,
        server_header=False,
        # uvicorn would believe X-Forwarded-For from 127.0.0.1 by default; TraceMiddleware
        # believes it only from FETCHML_TRUSTED_PROXIES.
        proxy_headers=False,
        # What a /ws client may send is a few small JSON messages (ping, pong, subscribe with at
        # most 1000 ids): uvicorn's 16 MiB default would let one message take that much memory.
        ws_max_size=128 * 1024,
        http=JoinedWritesHttpToolsProtocol,
    )

    class Server(uvicorn.Server):
        async def shutdown(self, sockets: Any = None) -> None:
            # Open streams never end by themselves; uvicorn waits for every connection to close
            # before the lifespan ends. They end now, telling clients to resume elsewhere.
            services.feed.close_streams()
            await super().shutdown(sockets)

    return services, Server(config)


def base_url(settings: Settings) -> str:
    host = "127.0.0.1" if settings.host in ("0.0.0.0", "::", "") else settings.host
    if ":" in host:  # an IPv6 address (::1) goes in brackets in a URL
        host = f"[{host}]"
    return f"http://{host}:{settings.port}"


def serve(
    settings: Settings,
    *,
    companion: Companion | None = None,
    prepare: Callable[[Services, str], None] | None = None,
) -> None:
    """`prepare`, given the started (migrated) services and the server's base URL, runs before
    anything else starts or the port is bound (the first-run admin key of `fetchml serve`)."""
    configure_logging(settings.log_level)
    services, server = build(settings)
    stop_companion: Callable[[], None] | None = None
    try:
        if prepare is not None:
            prepare(services, base_url(settings))
        if companion is not None:
            stop_companion = companion(services, base_url(settings))
        _tune_runtime()
        log.info(
            "fetchml serving on http://%s:%d (database: %s)",
            settings.host,
            settings.port,
            "sqlite" if services.db.is_sqlite else "postgresql",
        )
        server.run()
    finally:
        if stop_companion is not None:
            stop_companion()
        services.stop()


class BackgroundServer:
    """A server in a thread of this process, for `fetchml run` when no server answers."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.services, self._server = build(settings)
        self._thread = threading.Thread(target=self._server.run, name="fetchml-embedded-server", daemon=True)

    @property
    def url(self) -> str:
        return base_url(self.settings)

    def start(self, timeout: float = 30.0) -> None:
        self._thread.start()
        deadline = threading.Event()
        for _ in range(int(timeout / 0.05)):
            if self._server.started:
                return
            if not self._thread.is_alive():
                break
            deadline.wait(0.05)
        raise RuntimeError(f"the embedded server did not start on {self.url}")

    def stop(self) -> None:
        self._server.should_exit = True
        self._thread.join(timeout=30)
        self.services.stop()
