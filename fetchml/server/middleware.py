"""Outermost ASGI layer: gives every request a trace id, echoes it in X-Trace-Id, adds the
security headers, works out the client address (X-Forwarded-For only from trusted proxies) and
writes one access-log line carrying the trace id. It wraps the whole Litestar app so that even
routing failures (404/405) get the headers and the log line."""

from __future__ import annotations

import ipaddress
import time
from collections.abc import Iterable
from random import getrandbits
from typing import Any

from fetchml.server.accesslog import AccessLog
from fetchml.server.context import PRINCIPAL_KEY, TRACE_KEY

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
_PROXIED_DEFAULTS = [
    (k, v) for k, v in SECURITY_HEADERS if k in (b"x-content-type-options", b"referrer-policy")
]


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


# A version-4 UUID's fixed bits. Trace ids only need to be unique, not unguessable, and
# uuid.uuid4() (a getrandom syscall and a UUID object) cost a few times more per request.
_V4_CLEAR = ~((0xF000 << 64) | (0xC000 << 48)) & ((1 << 128) - 1)
_V4_SET = (0x4000 << 64) | (0x8000 << 48)


def new_trace_id() -> str:
    h = f"{getrandbits(128) & _V4_CLEAR | _V4_SET:032x}"
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


class TraceMiddleware:
    def __init__(self, app: ASGIApp, *, log_requests: bool = True, trusted_proxies: str = "") -> None:
        self.app = app
        self.access_log = AccessLog() if log_requests else None
        self.trusted = parse_trusted_proxies(trusted_proxies)

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] not in ("http", "websocket"):
            if scope["type"] == "lifespan" and self.access_log is not None:
                send = self._flush_at_shutdown(send, self.access_log)
            await self.app(scope, receive, send)
            return
        client = scope.get("client")
        if client and self.trusted:
            real = forwarded_client(client[0], _header(scope, b"x-forwarded-for"), self.trusted)
            if real != client[0]:
                scope["client"] = (real, 0)
        trace_id = new_trace_id()
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
            if self.access_log is not None and scope["type"] == "http":
                principal = scope.get(PRINCIPAL_KEY)
                client = scope.get("client")
                self.access_log.write(
                    f"{log_safe(client[0]) if client else '-'} {log_safe(scope['method'])} "
                    f"{log_safe(scope['path'])} {status} {(time.perf_counter() - started) * 1000:.1f}ms "
                    f"trace_id={trace_id} user={log_safe(principal.user_id) if principal else '-'}"
                )

    @staticmethod
    def _flush_at_shutdown(send: Any, access_log: AccessLog) -> Any:
        # uvicorn shuts the app down once the last request is answered, then re-raises SIGTERM,
        # which ends the process without atexit: the last batch goes out here.
        async def send_flushing(message: dict[str, Any]) -> None:
            if message["type"].startswith("lifespan.shutdown."):
                access_log.flush()
            await send(message)

        return send_flushing
