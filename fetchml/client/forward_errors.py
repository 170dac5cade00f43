"""The forwarder's own refusals (fetchml.client.forward), in the fetchml error envelope."""

from __future__ import annotations

import json
import uuid

from fetchml.client.forward_headers import Scope, Send
from fetchml.core.errors import FetchmlError


def error_body(exc: FetchmlError, trace_id: str) -> bytes:
    return json.dumps({"error": exc.message, "code": exc.code, "trace_id": trace_id}).encode()


async def send_error(scope: Scope, send: Send, exc: FetchmlError) -> None:
    """`exc` in the envelope, as an HTTP answer (also to a WebSocket not yet accepted, where the
    ASGI server can; else the socket is closed with 1008 or 1011)."""
    trace_id = uuid.uuid4().hex
    body = error_body(exc, trace_id)
    headers = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(body)).encode()),
        (b"x-trace-id", trace_id.encode()),
    ]
    if scope["type"] == "http":
        await send({"type": "http.response.start", "status": exc.status, "headers": headers})
        await send({"type": "http.response.body", "body": body})
    elif "websocket.http.response" in (scope.get("extensions") or {}):
        await send({"type": "websocket.http.response.start", "status": exc.status, "headers": headers})
        await send({"type": "websocket.http.response.body", "body": body})
    else:
        await send({"type": "websocket.close", "code": 1008 if exc.status < 500 else 1011})
