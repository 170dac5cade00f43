"""`fetchml serve`: migrate, start the writer, serve HTTP until told to stop."""

from __future__ import annotations

import gc
import logging
import sys

from fetchml.core.settings import Settings
from fetchml.server.app import create_asgi
from fetchml.services.container import Services


def configure_logging(level: str) -> None:
    logging.basicConfig(
        level=level.upper(),
        stream=sys.stderr,
        format="%(asctime)s %(levelname)s %(name)s %(message)s",
    )


def serve(settings: Settings) -> None:
    import uvicorn

    configure_logging(settings.log_level)
    services = Services(settings)
    services.start()
    app = create_asgi(services)
    # Everything allocated so far lives for the whole process: keep it out of the cyclic
    # collector's full passes, and collect young objects less often. Under a submission burst
    # the default thresholds cost several ms of pause per full pass.
    gc.collect()
    gc.freeze()
    gc.set_threshold(20_000, 20, 20)
    # The event loop and the writer thread share the GIL; a shorter switch interval keeps a
    # long commit batch from holding request handling back for the default 5 ms slices.
    sys.setswitchinterval(0.001)
    try:
        config = uvicorn.Config(
            app,
            host=settings.host,
            port=settings.port,
            access_log=False,  # our TraceMiddleware writes the access line, with the trace id
            log_level=settings.log_level.lower(),
            server_header=False,
        )
        logging.getLogger("fetchml.server").info(
            "fetchml serving on http://%s:%d (database: %s)",
            settings.host,
            settings.port,
            "sqlite" if services.db.is_sqlite else "postgresql",
        )
        uvicorn.Server(config).run()
    finally:
        services.stop()
