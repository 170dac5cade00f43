"""Outermost ASGI layer: gives every request a trace id, echoes it in X-Trace-Id and
writes one access-log line carrying it. It wraps the whole Litestar app so that even
routing failures (404/405) get the header and the log line."""

from __future__ import annotations

import logging
import time
import uuid
from typing import Any

from fetchml.server.context import PRINCIPAL_KEY, TRACE_KEY

access_log = logging.getLogger("fetchml.access")

ASGIApp = Any


class TraceMiddleware:
    def __init__(self, app: ASGIApp, *, log_requests: bool = True) -> None:
        self.app = app
        self.log_requests = log_requests

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        trace_id = str(uuid.uuid4())
        scope[TRACE_KEY] = trace_id
        header = (b"x-trace-id", trace_id.encode())
        status = 0
        started = time.perf_counter()

        async def send_with_trace(message: dict[str, Any]) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message["headers"] = [*message.get("headers", []), header]
            await send(message)

        try:
            await self.app(scope, receive, send_with_trace)
        finally:
            if self.log_requests and scope["type"] == "http":
                principal = scope.get(PRINCIPAL_KEY)
                access_log.info(
                    "%s %s %s %d %.1fms trace_id=%s user=%s",
                    scope.get("client", ("-",))[0] if scope.get("client") else "-",
                    scope["method"],
                    scope["path"],
                    status,
                    (time.perf_counter() - started) * 1000,
                    trace_id,
                    principal.user_id if principal else "-",
                )
