from __future__ import annotations

from typing import Any

from litestar import Request, get

from fetchml.core.models import QueueStats
from fetchml.server.context import services_of
from fetchml.server.security import USERS


@get(
    "/v1/queue",
    opt=USERS,
    tags=["Tasks"],
    summary="Queue statistics",
    description="completed and failed count tasks that ended since local midnight in FETCHML_TIMEZONE (UTC by default).",
)
async def queue_stats(request: Request[Any, Any, Any]) -> QueueStats:
    return await services_of(request).queue.stats()
