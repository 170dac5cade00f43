"""GET /metrics: Prometheus text for an admin key, or for anyone with FETCHML_METRICS_PUBLIC=true."""

from __future__ import annotations

from typing import Any

from litestar import Request, Response, get
from litestar.connection import ASGIConnection
from litestar.enums import MediaType
from litestar.handlers.base import BaseRouteHandler

from fetchml.core.enums import Role
from fetchml.core.errors import ForbiddenError
from fetchml.server.context import PRINCIPAL_KEY, services_of
from fetchml.server.metrics import CONTENT_TYPE, metrics_of
from fetchml.services.principal import Principal


async def metrics_access(connection: ASGIConnection[Any, Any, Any, Any], _handler: BaseRouteHandler) -> None:
    """Admins always. With the public setting, anyone: no key at all (the auth guard let it
    through, see `anonymous_setting`), or any valid key, since a scraper that happens to send
    one should not fare worse than one that sends none."""
    principal = connection.scope.get(PRINCIPAL_KEY)
    if services_of(connection).settings.metrics_public:
        return
    if not isinstance(principal, Principal) or principal.role is not Role.ADMIN:
        raise ForbiddenError()


@get(
    "/metrics",
    guards=[metrics_access],
    # Read by the auth guard: with this setting on, a request without a key is let in
    # (still rate limited by address) instead of answered 401.
    opt={"anonymous_setting": "metrics_public"},
    media_type=MediaType.TEXT,
    tags=["Operations"],
    summary="Prometheus metrics",
    description=(
        "Prometheus text exposition format 0.0.4. An admin key is required unless the server runs with "
        "FETCHML_METRICS_PUBLIC=true, which lets requests without a key in. Database-wide gauges are "
        "read at scrape time and are the same on every server sharing a database; request counters "
        "and histograms are per process (docs/metrics.md)."
    ),
)
async def metrics(request: Request[Any, Any, Any]) -> Response[str]:
    cluster = await services_of(request).metrics.snapshot()
    body = metrics_of(request).render(cluster)
    return Response(content=body.decode(), media_type=CONTENT_TYPE)
