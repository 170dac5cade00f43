"""Outermost ASGI layer: gives every request a trace id, echoes it in X-Trace-Id, adds the
security headers, works out the client address (X-Forwarded-For only from trusted proxies) and
writes one access-log line carrying the trace id. It wraps the whole Litestar app so that even
routing failures (404/405) get the headers and the log line."""

from __future__ import annotations

import ipaddress
import logging
import time
import uuid
from collections.abc import Iterable
from typing import Any

from fetchml.server.context import PRINCIPAL_KEY, TRACE_KEY

access_log = logging.getLogger("fetchml.access")

ASGIApp = Any
Network = ipaddress.IPv4Network | ipaddress.IPv6Network

# Every response is an API answer (JSON, a log stream, an artifact, the OpenAPI document): none
# is a page to render, frame, cache or sniff. no-store matters most for POST /v1/keys, whose
# answer holds a new key, but a blanket rule cannot miss a route added later.
SECURITY_HEADERS: list[tuple[bytes, bytes]] = [
    (b"x-content-type-options", b"nosniff"),
    (b"cache-control", b"no-store"),
    (b"referrer-policy", b"no-referrer"),
    (b"x-frame-options", b"DENY"),
    (b"content-security-policy", b"default-src 'none'; frame-ancestors 'none'"),
]
_OURS = {name for name, _ in SECURITY_HEADERS}
# Set on the scope by a route that relays another server's answer (the Jupyter proxy): that
# answer keeps its own Content-Security-Policy, framing and caching rules (ours would stop a
# Jupyter page's scripts), and gets only the headers below where it has none of its own.
PROXIED_KEY = "fetchml.proxied"
_PROXIED_DEFAULTS = [(k, v) for k, v in SECURITY_HEADERS if k in (b"x-content-type-options", b"referrer-policy")]


def parse_trusted_proxies(spec: str) -> list[Network]:
    """`FETCHML_TRUSTED_PROXIES`: comma-separated addresses or CIDR networks."""
    nets: list[Network] = []
    for part in spec.split(","):
        part = part.strip()
        if part:
            try:
                nets.append(ipaddress.ip_network(part, strict=False))
            except ValueError as exc:
                raise ValueError(
                    f"FETCHML_TRUSTED_PROXIES: {part!r} is not an IP address or network"
                ) from exc
    return nets


def _is_trusted(address: str, trusted: Iterable[Network]) -> bool:
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    return any(ip in net for net in trusted)


def forwarded_client(peer: str, forwarded_for: str | None, trusted: list[Network]) -> str:
    """The client address. Only a trusted peer's X-Forwarded-For counts, and from it the
    right-most address that is not itself a trusted proxy: everything left of that was written
    by whoever sent the request and may be made up."""
    if not trusted or not forwarded_for or not _is_trusted(peer, trusted):
        return peer
    client = peer
    for hop in reversed([h.strip() for h in forwarded_for.split(",")]):
        try:
            hop = str(ipaddress.ip_address(hop))
        except ValueError:
            break  # garbage from an untrusted source: keep the last address a proxy vouched for
        client = hop
        if not _is_trusted(hop, trusted):
            break
    return client


def log_safe(value: object) -> str:
    """A request-derived value as one printable ASCII token: control characters, backslashes and
    non-ASCII become backslash escapes, so a %0a in a path cannot start a forged log line."""
    text = str(value)
    if text.isascii() and text.isprintable() and "\\" not in text:
        return text
    out = []
    for ch in text:
        code = ord(ch)
        if ch == "\\":
            out.append("\\\\")
        elif 0x20 <= code < 0x7F:
            out.append(ch)
        elif code <= 0xFF:
            out.append(f"\\x{code:02x}")
        elif code <= 0xFFFF:
            out.append(f"\\u{code:04x}")
        else:
            out.append(f"\\U{code:08x}")
    return "".join(out)


def _header(scope: dict[str, Any], name: bytes) -> str | None:
    values = [v.decode("latin-1") for k, v in scope.get("headers", []) if k.lower() == name]
    # Several X-Forwarded-For headers are one list, in order.
    return ",".join(values) if values else None


class TraceMiddleware:
    def __init__(self, app: ASGIApp, *, log_requests: bool = True, trusted_proxies: str = "") -> None:
        self.app = app
        self.log_requests = log_requests
        self.trusted = parse_trusted_proxies(trusted_proxies)

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        client = scope.get("client")
        if client and self.trusted:
            real = forwarded_client(client[0], _header(scope, b"x-forwarded-for"), self.trusted)
            if real != client[0]:
                scope["client"] = (real, 0)
        trace_id = str(uuid.uuid4())
        scope[TRACE_KEY] = trace_id
        extra = [(b"x-trace-id", trace_id.encode()), *SECURITY_HEADERS]
        status = 0
        started = time.perf_counter()

        async def send_with_headers(message: dict[str, Any]) -> None:
            nonlocal status
            # A WebSocket refused before its upgrade answers over HTTP too (WebSocketDenial).
            if message["type"] in ("http.response.start", "websocket.http.response.start"):
                status = message["status"]
                if scope.get(PROXIED_KEY):
                    own = message.get("headers", [])
                    present = {k.lower() for k, _ in own}
                    defaults = [(k, v) for k, v in _PROXIED_DEFAULTS if k not in present]
                    message["headers"] = [*own, extra[0], *defaults]
                else:
                    kept = [(k, v) for k, v in message.get("headers", []) if k.lower() not in _OURS]
                    message["headers"] = [*kept, *extra]
            await send(message)

        try:
            await self.app(scope, receive, send_with_headers)
        finally:
            if self.log_requests and scope["type"] == "http":
                principal = scope.get(PRINCIPAL_KEY)
                client = scope.get("client")
                access_log.info(
                    "%s %s %s %d %.1fms trace_id=%s user=%s",
                    log_safe(client[0]) if client else "-",
                    log_safe(scope["method"]),
                    log_safe(scope["path"]),
                    status,
                    (time.perf_counter() - started) * 1000,
                    trace_id,
                    log_safe(principal.user_id) if principal else "-",
                )
