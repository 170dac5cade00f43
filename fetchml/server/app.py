from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Any

import msgspec
from litestar import Litestar
from litestar.datastructures import State
from litestar.openapi import OpenAPIConfig
from litestar.openapi.plugins import JsonRenderPlugin, YamlRenderPlugin
from litestar.openapi.spec import Components, SecurityScheme
from litestar.plugins.pydantic import PydanticPlugin
from pydantic import BaseModel

from fetchml import __version__
from fetchml.core.ratelimit import TokenBuckets
from fetchml.server.errors import handle_exception
from fetchml.server.metrics import MetricsMiddleware, ServerMetrics
from fetchml.server.middleware import TraceMiddleware
from fetchml.server.openapi import document_errors
from fetchml.server.routes.artifacts import ArtifactController
from fetchml.server.routes.audit import AuditController, audit_public_key
from fetchml.server.routes.experiments import ExperimentController
from fetchml.server.routes.health import health
from fetchml.server.routes.jupyter import JupyterController, JupyterWorkerController
from fetchml.server.routes.jupyter_proxy import (
    jupyter_proxy,
    jupyter_proxy_head,
    jupyter_proxy_ws,
    proxy_lifespan,
)
from fetchml.server.routes.keys import KeyController
from fetchml.server.routes.logs import LogController
from fetchml.server.routes.metrics import metrics
from fetchml.server.routes.plugins import PluginController
from fetchml.server.routes.queue import queue_stats
from fetchml.server.routes.reservations import ReservationController
from fetchml.server.routes.scheduler import SchedulerController
from fetchml.server.routes.snapshots import snapshot_router
from fetchml.server.routes.streams import job_stream, scheduler_status_stream
from fetchml.server.routes.tasks import TaskController
from fetchml.server.routes.workers import TaskReportController, WorkerProtocolController
from fetchml.server.security import make_auth_guard
from fetchml.server.websocket import WebSocketDenial, remember_ws_error, ws_updates
from fetchml.services.wiring import Services


def _background(services: Services) -> Callable[[Litestar], AbstractAsyncContextManager[None]]:
    """The lease sweeper, the audit checkpointer and the tracker sidecars' supervisor run for the
    life of the app, on its event loop."""

    @asynccontextmanager
    async def lifespan(_app: Litestar) -> AsyncIterator[None]:
        stop = asyncio.Event()
        await services.start_feed()
        sweeper = asyncio.create_task(services.leases.run_sweeper(stop), name="fetchml-lease-sweeper")
        checkpointer = asyncio.create_task(services.checkpoints.run(stop), name="fetchml-audit-checkpoints")
        sidecars = asyncio.create_task(services.sidecars.run(stop), name="fetchml-sidecars")
        try:
            yield
        finally:
            stop.set()
            await sweeper
            await checkpointer
            await sidecars  # the trackers stop with the server
            await services.stop_feed()

    return lifespan


def encode_model(model: BaseModel) -> msgspec.Raw:
    """A model in a response, as JSON text pydantic writes itself (exclude_none, as the plugin's
    encoder): the plugin's model_dump(mode="json") builds a dict of the whole model that msgspec
    then walks again. Raw text is spliced in as it is, in a list or a dict as well."""
    return msgspec.Raw(model.__pydantic_serializer__.to_json(model, exclude_none=True))


def create_app(services: Services) -> Litestar:
    settings = services.settings
    buckets = TokenBuckets(settings.rate_limit_per_minute)
    # Failed authentications are limited per client address, on the same budget.
    failures = TokenBuckets(settings.rate_limit_per_minute)
    # This app's own registry: several apps in one process (tests) keep separate counts.
    server_metrics = ServerMetrics()
    services.claims.start_latency_observers.append(server_metrics.observe_start_latency)
    app = Litestar(
        route_handlers=[
            health,
            TaskController,
            ReservationController,
            queue_stats,
            ExperimentController,
            AuditController,
            audit_public_key,
            KeyController,
            snapshot_router(settings.max_snapshot_bytes),
            WorkerProtocolController,
            TaskReportController,
            JupyterController,
            JupyterWorkerController,
            PluginController,
            jupyter_proxy,
            jupyter_proxy_head,
            jupyter_proxy_ws,
            LogController,
            ArtifactController,
            SchedulerController,
            scheduler_status_stream,
            job_stream,
            ws_updates,
            metrics,
        ],
        after_exception=[remember_ws_error],
        lifespan=[_background(services), proxy_lifespan],
        guards=[make_auth_guard(buckets, failures, services.clock)],
        exception_handlers={Exception: handle_exception},
        # The contract declares no nullable property: an absent value is left out of every
        # response, never null. One setting for every model we send (values inside free-form
        # dicts such as metadata are data, and kept as they are).
        plugins=[PydanticPlugin(exclude_none=True)],
        type_encoders={BaseModel: encode_model},
        state=State({"services": services, "metrics": server_metrics}),
        request_max_body_size=settings.max_body_bytes,
        openapi_config=OpenAPIConfig(
            title="fetchml",
            version=__version__,
            path="/schema",
            # The document only (JSON at /schema and /schema/openapi.json, YAML at
            # /schema/openapi.yaml): the HTML viewers load their scripts from CDNs without
            # integrity checks, and an API server has no business serving pages.
            render_plugins=[JsonRenderPlugin(), YamlRenderPlugin()],
            components=Components(
                security_schemes={
                    "ApiKeyAuth": SecurityScheme(type="apiKey", name="X-API-Key", security_scheme_in="header")
                }
            ),
            security=[{"ApiKeyAuth": []}],
        ),
        logging_config=None,  # fetchml.server.main configures logging once, for uvicorn too
        debug=False,
    )
    document_errors(app)
    return app


def create_asgi(services: Services) -> Any:
    app = create_app(services)
    return TraceMiddleware(
        # Inside the trace layer, outside Litestar: requests no route matched are counted too.
        MetricsMiddleware(WebSocketDenial(app), app.state["metrics"]),
        log_requests=services.settings.access_log,
        trusted_proxies=services.settings.trusted_proxies,
    )
