"""The forwarder's WebSocket half (fetchml.client.forward): connect upstream, accept with the
subprotocol the upstream chose, then relay messages both ways until either side closes."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Mapping
from typing import Any

from fetchml.client.forward_headers import (
    _REQUEST_DROP,
    _RESPONSE_DROP,
    Receive,
    Scope,
    Send,
    _dropped,
)
from fetchml.core.errors import BadGatewayError

WS_MAX_QUEUE = 4  # frames buffered from upstream before reading stops (back pressure)
_WS_DROP = _REQUEST_DROP | {
    "sec-websocket-key",
    "sec-websocket-version",
    "sec-websocket-extensions",
    "sec-websocket-protocol",
    "sec-websocket-accept",
    "user-agent",
}
KEY_SUBPROTOCOL = "fetchml"  # fetchml's own subprotocols: `fetchml` and `fetchml.key.<key>`
# Codes an endpoint may send in a close frame (RFC 6455 7.4); others (1005, 1006, 1015) only
# describe what happened.
_SENDABLE_CLOSE = frozenset({1000, 1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011, 1012, 1013, 1014})


def _sendable(code: int | None, fallback: int) -> int:
    return code if code is not None and (code in _SENDABLE_CLOSE or 3000 <= code <= 4999) else fallback


def _is_key_protocol(proto: str) -> bool:
    return proto == KEY_SUBPROTOCOL or proto.startswith(KEY_SUBPROTOCOL + ".")


async def relay_websocket(
    url: str,
    scope: Scope,
    receive: Receive,
    send: Send,
    *,
    extra: Mapping[str, str],
    open_timeout: float,
    max_message_bytes: int,
) -> None:
    """Relays the client's WebSocket (its connect already received) to `url`, adding `extra`.
    An upstream refusal is relayed (status, headers, body) where the ASGI server can answer a
    WebSocket over HTTP; BadGatewayError when the upstream cannot be reached."""
    from websockets.asyncio.client import connect
    from websockets.exceptions import InvalidStatus, WebSocketException

    headers = _dropped(scope.get("headers", []), _WS_DROP | frozenset(extra))
    headers.extend(extra.items())
    offered = [p for p in scope.get("subprotocols") or () if not _is_key_protocol(p)]
    try:
        upstream = await connect(
            url,
            additional_headers=headers,
            subprotocols=offered or None,
            user_agent_header=None,
            proxy=None,
            open_timeout=open_timeout,
            max_size=max_message_bytes,
            max_queue=WS_MAX_QUEUE,
            close_timeout=5,
        )
    except InvalidStatus as exc:
        await _relay_refusal(scope, send, exc.response)
        return
    except (OSError, TimeoutError, WebSocketException) as exc:
        raise BadGatewayError() from exc
    async with upstream:
        await send({"type": "websocket.accept", "subprotocol": upstream.subprotocol, "headers": []})
        await _pump_ws(upstream, receive, send, max_message_bytes)


async def _pump_ws(upstream: Any, receive: Receive, send: Send, max_message_bytes: int) -> None:
    from websockets.exceptions import ConnectionClosed

    client_code: list[int] = []  # set when the client closed first

    async def down() -> None:  # client -> upstream
        while True:
            message = await receive()
            if message["type"] == "websocket.disconnect":
                client_code.append(int(message.get("code") or 1000))
                return
            if message["type"] != "websocket.receive":
                continue
            data = message.get("bytes")
            if data is None:
                data = message.get("text") or ""
            if len(data) > max_message_bytes:
                client_code.append(1009)
                with contextlib.suppress(Exception):
                    await send({"type": "websocket.close", "code": 1009, "reason": "message too big"})
                return
            await upstream.send(data)

    async def up() -> None:  # upstream -> client
        with contextlib.suppress(ConnectionClosed):
            async for data in upstream:
                key = "text" if isinstance(data, str) else "bytes"
                await send({"type": "websocket.send", key: data})

    tasks = [asyncio.create_task(down()), asyncio.create_task(up())]
    try:
        await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
    if client_code:
        with contextlib.suppress(Exception):
            await upstream.close(code=_sendable(client_code[0], 1000))
    else:
        code = upstream.close_code
        reason = upstream.close_reason or ""
        with contextlib.suppress(Exception):
            await send({"type": "websocket.close", "code": _sendable(code, 1011), "reason": reason[:120]})


async def _relay_refusal(scope: Scope, send: Send, response: Any) -> None:
    if "websocket.http.response" not in (scope.get("extensions") or {}):
        await send({"type": "websocket.close", "code": 1008})
        return
    body = bytes(response.body or b"")
    headers = [
        (k.encode("latin-1"), v.encode("latin-1"))
        for k, v in _dropped(
            [(k.encode("latin-1"), v.encode("latin-1")) for k, v in response.headers.raw_items()],
            _RESPONSE_DROP | {"content-length"},
        )
    ]
    headers.append((b"content-length", str(len(body)).encode()))
    await send({"type": "websocket.http.response.start", "status": response.status_code, "headers": headers})
    await send({"type": "websocket.http.response.body", "body": body})
