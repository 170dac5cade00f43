"""GET /ws: task updates over a WebSocket (docs/events.md).

Authentication happens before the upgrade, by the same guard as every route: the `X-API-Key`
header, or for browsers (which cannot set headers on a WebSocket) the subprotocol pair
`fetchml` + `fetchml.key.<key>`; the server accepts with `fetchml` and never echoes the key.
A refusal is an HTTP answer in the contract's envelope (401, 403, 429), not a closed socket:
`WebSocketDenial` turns the close Litestar sends for an exception raised before `accept` into
that response, where the server supports the ASGI denial extension (uvicorn does).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from typing import Any

from litestar import WebSocket, websocket
from litestar.exceptions import WebSocketDisconnect

from fetchml.core.errors import FetchmlError
from fetchml.core.events import FeedEvent, how_it_ended
from fetchml.server.context import TRACE_KEY, principal_of, services_of
from fetchml.server.security import USERS
from fetchml.services.streams import Resync

SUBPROTOCOL = "fetchml"
ERROR_KEY = "fetchml.ws_error"
MAX_SUBSCRIBE_IDS = 1000
CLOSE_IDLE = 4408  # the client sent nothing (not even pong) for ws_idle_seconds
CLOSE_RESYNC = 4409  # the client fell too far behind the feed: reconnect


def update_messages(event: FeedEvent) -> list[dict[str, Any]]:
    messages: list[dict[str, Any]] = [{"type": "task_update", "event": event.payload()}]
    if event.terminal:
        data = event.data
        done = {k: data[k] for k in ("task_id", "job_name", "user_id", "exit_code", "error") if k in data}
        messages.append(
            {
                "type": "task_complete",
                "event_id": event.id,
                "status": data.get("to"),
                "outcome": how_it_ended(data),
            }
            | done
        )
    return messages


@websocket("/ws", opt=USERS, summary="Task updates (WebSocket)")
async def ws_updates(socket: WebSocket[Any, Any, Any]) -> None:
    services = services_of(socket)
    settings = services.settings
    principal = principal_of(socket)
    wanted: set[str] | None = None
    stream = services.streams.open_updates(principal, lambda e: wanted is None or e.task_id in wanted)
    offered = socket.scope.get("subprotocols") or []
    lock = asyncio.Lock()

    async def send(message: dict[str, Any]) -> None:
        async with lock:
            await socket.send_text(json.dumps(message, separators=(",", ":")))

    async def pump() -> None:
        async for item in stream.items():
            if isinstance(item, FeedEvent):
                for message in update_messages(item):
                    await send(message)
            elif isinstance(item, Resync):
                await send({"type": "resync", "reason": "slow_consumer"})
                await socket.close(code=CLOSE_RESYNC, reason="fell behind; reconnect")
                return

    async def ping() -> None:
        while True:
            await asyncio.sleep(settings.ws_ping_seconds)
            await send({"type": "ping"})

    async def listen() -> None:
        nonlocal wanted
        while True:
            try:
                raw = await asyncio.wait_for(socket.receive_text(), settings.ws_idle_seconds)
            except TimeoutError:
                await socket.close(code=CLOSE_IDLE, reason="no message or pong for too long")
                return
            try:
                message = json.loads(raw)
                kind = message.get("type") if isinstance(message, dict) else None
            except ValueError:
                kind = None
            if kind == "ping":
                await send({"type": "pong"})
            elif kind == "pong":
                pass
            elif kind == "subscribe":
                ids = message.get("task_ids")
                if ids is None:
                    wanted = None
                elif (
                    isinstance(ids, list)
                    and len(ids) <= MAX_SUBSCRIBE_IDS
                    and all(isinstance(i, str) for i in ids)
                ):
                    wanted = set(ids)
                else:
                    await send(_bad(f"subscribe: task_ids must be a list of at most {MAX_SUBSCRIBE_IDS} ids"))
                    continue
                await send({"type": "subscribed", "task_ids": None if wanted is None else sorted(wanted)})
            else:
                await send(_bad("expected a JSON object with type ping, pong or subscribe"))

    try:
        await socket.accept(subprotocols=SUBPROTOCOL if SUBPROTOCOL in offered else None)
        with socket.app.state["metrics"].open_stream("websocket"):
            tasks = [asyncio.create_task(c()) for c in (pump, ping, listen)]
            try:
                await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
            finally:
                for t in tasks:
                    t.cancel()
                for t in tasks:
                    with contextlib.suppress(asyncio.CancelledError, WebSocketDisconnect, Exception):
                        await t
    except WebSocketDisconnect:
        pass
    finally:
        stream.close()


def _bad(message: str) -> dict[str, Any]:
    return {"type": "error", "code": "BAD_REQUEST", "error": message}


async def remember_ws_error(exc: Exception, scope: Any) -> None:
    """An `after_exception` hook: keep what refused a WebSocket, for `WebSocketDenial`."""
    if scope.get("type") == "websocket":
        scope[ERROR_KEY] = exc


class WebSocketDenial:
    """Answers a WebSocket refused before `accept` with an HTTP error in the contract's envelope."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "websocket" or "websocket.http.response" not in (scope.get("extensions") or {}):
            await self.app(scope, receive, send)
            return
        accepted = False

        async def guarded_send(message: Any) -> None:
            nonlocal accepted
            if message["type"] == "websocket.accept":
                accepted = True
            elif message["type"] == "websocket.close" and not accepted and ERROR_KEY in scope:
                status, body, headers = _denial(scope[ERROR_KEY], str(scope.get(TRACE_KEY, "")))
                await send({"type": "websocket.http.response.start", "status": status, "headers": headers})
                await send({"type": "websocket.http.response.body", "body": body})
                return
            await send(message)

        await self.app(scope, receive, guarded_send)


def _denial(exc: Exception, trace_id: str) -> tuple[int, bytes, list[tuple[bytes, bytes]]]:
    if isinstance(exc, FetchmlError):
        status, code, message = exc.status, exc.code, exc.message
    else:
        status, code, message = 500, "INTERNAL_ERROR", "Internal server error"
    body = json.dumps({"error": message, "code": code, "trace_id": trace_id}).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    retry = getattr(exc, "retry_after", None)
    if status in (429, 503) and retry:
        headers.append((b"retry-after", str(retry).encode()))
    return status, body, headers
