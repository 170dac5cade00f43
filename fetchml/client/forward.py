"""A small ASGI forwarder (HTTP and WebSocket) to one upstream base URL, with extra headers.

Used twice for Jupyter services: by the server's proxy route (upstream: the service's own URL
on its worker, extra header `Authorization: token ...`) and by `fetchml jupyter open`'s local
forward (upstream: the fetchml server's proxy path, extra header `X-API-Key`). Both sides serve
the same path (the Jupyter server's base URL, fetchml.core.jupyter.proxy_path), so nothing in
the pages or the Location headers needs rewriting: a request for `<prefix><rest>` goes to
`<upstream><rest>`.

What goes upstream: the method, the raw path and query, the body streamed as it arrives (at most
`max_body_bytes`), the client's headers less the hop-by-hop ones, `Host` (rewritten), `Origin`,
`X-API-Key` and fetchml's WebSocket key subprotocols; then the extra headers. The proxy
authenticates users itself, so Jupyter's own Origin check has nothing to add and would refuse
every browser behind a rewritten Host. What comes back: the status, the headers less the
hop-by-hop ones, the body streamed as it arrives; WebSocket messages both ways, at most
`max_ws_message_bytes` each, and a close on either side closes the other.

An upstream that cannot be reached raises BadGatewayError before anything is sent, so the
caller answers in its own envelope (the server through its exception handler; `__call__`, the
standalone app, by itself). An upstream that refuses a WebSocket is relayed as it answered.

The HTTP half and the paths live here; client/forward_ws.py holds the WebSocket half,
client/forward_headers.py the ASGI shapes and the header rules, client/forward_errors.py the
error envelope. This module re-exports what callers import.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Mapping
from urllib.parse import quote, unquote, urlsplit

import httpx

from fetchml.client.forward_errors import error_body, send_error
from fetchml.client.forward_headers import (
    _REQUEST_DROP,
    _RESPONSE_DROP,
    HOP_BY_HOP,
    ASGIApp,
    Message,
    Receive,
    Scope,
    Send,
    _dropped,
    without_query_params,
)
from fetchml.client.forward_ws import KEY_SUBPROTOCOL, WS_MAX_QUEUE, relay_websocket
from fetchml.core.errors import (
    BadGatewayError,
    BadRequestError,
    FetchmlError,
    NotFoundError,
    PayloadTooLargeError,
)

__all__ = [
    "DEFAULT_MAX_BODY_BYTES",
    "DEFAULT_MAX_WS_MESSAGE_BYTES",
    "HOP_BY_HOP",
    "KEY_SUBPROTOCOL",
    "OPEN_TIMEOUT",
    "WS_MAX_QUEUE",
    "ASGIApp",
    "Forwarder",
    "Message",
    "Receive",
    "Scope",
    "Send",
    "error_body",
    "send_error",
    "without_query_params",
]

DEFAULT_MAX_BODY_BYTES = 256 * 1024 * 1024
# Kernel outputs with images or widget state run to a few MB; uvicorn takes 16 MiB per message
# from clients by default. Both ends hold at most a few such messages (WS_MAX_QUEUE).
DEFAULT_MAX_WS_MESSAGE_BYTES = 32 * 1024 * 1024
OPEN_TIMEOUT = 10.0
_PATH_SAFE = "/%:@!$&'()*+,;=-._~"


class Forwarder:
    """Forwards what arrives under `prefix` (a path ending in '/') to `upstream` (a base URL);
    `prefix` without its trailing slash goes to `upstream` without its own.

    `client`: an httpx.AsyncClient to share (the caller closes it); without one the forwarder
    makes its own on first use (close it with `aclose`)."""

    def __init__(
        self,
        upstream: str,
        prefix: str,
        *,
        headers: Mapping[str, str] | None = None,
        client: httpx.AsyncClient | None = None,
        max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
        max_ws_message_bytes: int = DEFAULT_MAX_WS_MESSAGE_BYTES,
        open_timeout: float = OPEN_TIMEOUT,
    ) -> None:
        parts = urlsplit(upstream)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise ValueError("upstream must be an http:// or https:// URL")
        if not prefix.startswith("/") or not prefix.endswith("/"):
            raise ValueError("prefix must start and end with '/'")
        self._origin = f"{parts.scheme}://{parts.netloc}"
        self._ws_origin = f"{'wss' if parts.scheme == 'https' else 'ws'}://{parts.netloc}"
        self._base_path = (parts.path.rstrip("/") + "/").encode()
        self.prefix = prefix.encode()
        self.extra = {k.lower(): v for k, v in (headers or {}).items()}
        self._client = client
        self._own_client = client is None
        self.max_body_bytes = max_body_bytes
        self.max_ws_message_bytes = max_ws_message_bytes
        self.open_timeout = open_timeout

    @staticmethod
    def make_client(open_timeout: float = OPEN_TIMEOUT) -> httpx.AsyncClient:
        # trust_env=False: no HTTP(S)_PROXY detour, no .netrc credentials on forwarded requests.
        # No read timeout: a download or a slow save may take as long as it takes; the ASGI
        # server notices clients that leave.
        return httpx.AsyncClient(
            trust_env=False,
            follow_redirects=False,
            timeout=httpx.Timeout(None, connect=open_timeout, pool=open_timeout),
            limits=httpx.Limits(max_connections=200, max_keepalive_connections=50),
        )

    async def aclose(self) -> None:
        if self._own_client and self._client is not None:
            await self._client.aclose()
            self._client = None

    # -- paths ---------------------------------------------------------------------------------

    def upstream_path(self, scope: Scope) -> bytes:
        """The upstream's raw path and query for this request. The raw path is kept as the
        client encoded it (a file name's %2F stays one segment); dot segments are refused, so
        a request cannot climb out of the prefix on the upstream either."""
        raw = scope.get("raw_path") or quote(scope["path"], safe=_PATH_SAFE).encode()
        raw = quote(raw.decode("latin-1"), safe=_PATH_SAFE).encode()  # stray non-ASCII bytes
        if raw == self.prefix.rstrip(b"/"):
            path = self._base_path.rstrip(b"/")
        elif raw.startswith(self.prefix):
            rest = raw[len(self.prefix) :]
            if any(unquote(seg.decode()) in (".", "..") for seg in rest.split(b"/")):
                raise BadRequestError("The path must not contain '.' or '..' segments")
            path = self._base_path + rest
        else:
            raise NotFoundError()
        query = scope.get("query_string") or b""
        return path + (b"?" + query if query else b"")

    # -- HTTP ----------------------------------------------------------------------------------

    async def open(self, scope: Scope, receive: Receive) -> httpx.Response:
        """Sends the request upstream (its body streamed from `receive`) and returns the
        response with its body still to read. BadGatewayError when the upstream cannot be
        reached; PayloadTooLargeError past max_body_bytes (before anything goes upstream when
        Content-Length says so)."""
        target = self.upstream_path(scope)
        headers = _dropped(scope.get("headers", []), _REQUEST_DROP | frozenset(self.extra))
        raw_headers = dict(_dropped(scope.get("headers", []), frozenset()))
        length = raw_headers.get("content-length")
        chunked = "chunked" in raw_headers.get("transfer-encoding", "").lower()
        if length is not None:
            if not length.isdigit():
                raise BadRequestError("Invalid Content-Length")
            if int(length) > self.max_body_bytes:
                raise PayloadTooLargeError(f"Request body too large (at most {self.max_body_bytes} bytes)")
            headers.append(("content-length", length))
        headers.extend(self.extra.items())
        content = self._body(receive) if length not in (None, "0") or chunked else None
        if self._client is None:
            self._client = self.make_client(self.open_timeout)
        url = httpx.URL(self._origin).copy_with(raw_path=target)
        request = self._client.build_request(scope["method"], url, headers=headers, content=content)
        try:
            return await self._client.send(request, stream=True)
        except httpx.TransportError as exc:
            # Not str(exc): httpx words may carry the upstream's address, which is the worker's.
            raise BadGatewayError() from exc

    async def _body(self, receive: Receive) -> AsyncIterator[bytes]:
        total = 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                raise BadRequestError("The client went away during the upload")
            chunk = message.get("body", b"")
            total += len(chunk)
            if total > self.max_body_bytes:
                raise PayloadTooLargeError(f"Request body too large (at most {self.max_body_bytes} bytes)")
            if chunk:
                yield chunk
            if not message.get("more_body", False):
                return

    def respond(self, response: httpx.Response) -> ASGIApp:
        """An ASGI app that sends `response` (from `open`) and closes it, also when the client
        leaves first. An upstream that breaks off mid-body aborts the response (the client sees
        a cut, not a short body that looks whole)."""

        async def app(scope: Scope, receive: Receive, send: Send) -> None:
            try:
                await self._send_response(response, receive, send)
            finally:
                await response.aclose()

        return app

    async def _send_response(self, response: httpx.Response, receive: Receive, send: Send) -> None:
        headers = [
            (k.encode("latin-1"), v.encode("latin-1"))
            for k, v in _dropped(response.headers.raw, _RESPONSE_DROP)
        ]
        await send({"type": "http.response.start", "status": response.status_code, "headers": headers})

        async def pump() -> None:
            async for chunk in response.aiter_raw():
                if chunk:
                    await send({"type": "http.response.body", "body": chunk, "more_body": True})
            await send({"type": "http.response.body", "body": b"", "more_body": False})

        async def client_left() -> None:
            while (await receive())["type"] != "http.disconnect":
                pass

        body = asyncio.create_task(pump())
        watch = asyncio.create_task(client_left())
        try:
            done, _ = await asyncio.wait({body, watch}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in (body, watch):
                task.cancel()
            await asyncio.gather(body, watch, return_exceptions=True)
        failed = body.exception() if body in done else None
        if isinstance(failed, httpx.TransportError):
            raise BadGatewayError("The upstream server broke off its answer") from failed
        if failed is not None:
            raise failed

    async def http(self, scope: Scope, receive: Receive, send: Send) -> None:
        response = await self.open(scope, receive)
        await self.respond(response)(scope, receive, send)

    # -- WebSocket -----------------------------------------------------------------------------

    async def websocket(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Connects upstream first, then accepts with the subprotocol the upstream chose. An
        upstream refusal is relayed (status, headers, body) where the ASGI server can answer a
        WebSocket over HTTP; BadGatewayError when the upstream cannot be reached."""
        message = await receive()
        if message["type"] != "websocket.connect":
            return
        url = self._ws_origin + self.upstream_path(scope).decode()
        await relay_websocket(
            url,
            scope,
            receive,
            send,
            extra=self.extra,
            open_timeout=self.open_timeout,
            max_message_bytes=self.max_ws_message_bytes,
        )

    # -- standalone ----------------------------------------------------------------------------

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """The forwarder as an ASGI app of its own: refusals in the fetchml error envelope."""
        if scope["type"] == "http":
            started = False

            async def tracked(message: Message) -> None:
                nonlocal started
                started = started or message["type"] == "http.response.start"
                await send(message)

            try:
                await self.http(scope, receive, tracked)
            except FetchmlError as exc:
                if started:
                    raise
                await send_error(scope, send, exc)
        elif scope["type"] == "websocket":
            try:
                await self.websocket(scope, receive, send)
            except FetchmlError as exc:
                await send_error(scope, send, exc)
