"""What the forwarder (fetchml.client.forward) passes on: the ASGI shapes it speaks and the
headers that stay on this hop."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable
from typing import Any
from urllib.parse import unquote

Scope = dict[str, Any]
Message = dict[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

# RFC 9110 7.6.1, plus Proxy-Connection and the headers a server sets for itself.
HOP_BY_HOP = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-authenticate",
        "proxy-authorization",
        "proxy-connection",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
    }
)
_REQUEST_DROP = HOP_BY_HOP | {"host", "origin", "x-api-key", "content-length"}
_RESPONSE_DROP = HOP_BY_HOP | {"date", "server"}  # the ASGI server writes its own


def without_query_params(query: bytes, names: frozenset[str]) -> bytes:
    """`query` (raw, as in an ASGI scope) less the parameters named; the rest kept byte for byte."""
    if not query:
        return query
    kept = [p for p in query.split(b"&") if unquote(p.split(b"=", 1)[0].decode("latin-1")) not in names]
    return b"&".join(kept)


def _dropped(headers: Iterable[tuple[bytes, bytes]], drop: frozenset[str]) -> list[tuple[str, str]]:
    """The headers less `drop` and less whatever the Connection header names (hop-by-hop too)."""
    pairs = [(k.decode("latin-1").lower(), v.decode("latin-1")) for k, v in headers]
    named = {
        token.strip().lower() for name, value in pairs if name == "connection" for token in value.split(",")
    }
    return [(k, v) for k, v in pairs if k not in drop and k not in named]
