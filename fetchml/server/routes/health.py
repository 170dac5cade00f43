from __future__ import annotations

from typing import Any

from litestar import Request, get

from fetchml import __version__
from fetchml.core.models import HealthResponse
from fetchml.core.timeutil import utcnow
from fetchml.server.context import services_of


# security=[{}] is OpenAPI for "no key needed" (an empty list would be dropped by the schema
# generator, and /health would inherit the document's ApiKeyAuth requirement).
# The contract defines only a 200 for /health: a degraded server says so in `status`.
@get("/health", opt={"public": True}, security=[{}], tags=["Health"], summary="Health check")
async def health(request: Request[Any, Any, Any]) -> HealthResponse:
    status = await services_of(request).health.status()
    return HealthResponse(status=status, version=__version__, timestamp=utcnow())
