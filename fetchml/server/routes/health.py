from __future__ import annotations

from typing import Any

from litestar import Request, get

from fetchml import __version__
from fetchml.core.models import HealthResponse
from fetchml.core.timeutil import utcnow
from fetchml.server.context import services_of


# security=[{}] is OpenAPI for "no key needed" (an empty list would be dropped by the schema
# generator, and /health would inherit the document's ApiKeyAuth requirement).
@get("/health", opt={"public": True}, security=[{}], tags=["Health"], summary="Health check")
async def health(request: Request[Any, Any, Any]) -> HealthResponse:
    ok = await services_of(request).health.database_ok()
    return HealthResponse(status="healthy" if ok else "degraded", version=__version__, timestamp=utcnow())
