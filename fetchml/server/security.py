"""The guard: rate limit and authenticate every non-public route, then check the role."""

from __future__ import annotations

import hashlib
from collections.abc import Awaitable, Callable
from typing import Any

from litestar.connection import ASGIConnection
from litestar.enums import ScopeType
from litestar.handlers.base import BaseRouteHandler

from fetchml.core.clock import Clock
from fetchml.core.enums import Role
from fetchml.core.errors import ForbiddenError, RateLimitedError
from fetchml.core.ratelimit import TokenBuckets
from fetchml.server.context import PRINCIPAL_KEY, client_ip, services_of

KEY_SUBPROTOCOL_PREFIX = "fetchml.key."


def key_from_subprotocols(scope: Any) -> str | None:
    """`fetchml.key.<key>` among the offered WebSocket subprotocols (see fetchml.server.websocket)."""
    for proto in scope.get("subprotocols") or ():
        if isinstance(proto, str) and proto.startswith(KEY_SUBPROTOCOL_PREFIX):
            return proto[len(KEY_SUBPROTOCOL_PREFIX) :] or None
    return None


Guard = Callable[[ASGIConnection[Any, Any, Any, Any], BaseRouteHandler], Awaitable[None]]
API_KEY_HEADER = "x-api-key"


def make_auth_guard(buckets: TokenBuckets, failures: TokenBuckets, clock: Clock) -> Guard:
    async def authenticate(connection: ASGIConnection[Any, Any, Any, Any], handler: BaseRouteHandler) -> None:
        if handler.opt.get("public"):
            return
        raw = connection.headers.get(API_KEY_HEADER)
        if raw is None and connection.scope["type"] == ScopeType.WEBSOCKET:
            raw = key_from_subprotocols(connection.scope)  # browsers cannot set headers on a WebSocket
        ip = client_ip(connection)
        now = clock.monotonic()
        # Per key (or per address without one) before the lookup: one key hammering costs nothing.
        wait = buckets.take("k:" + hashlib.sha256(raw.encode()).hexdigest() if raw else f"ip:{ip}", now)
        if wait:
            raise RateLimitedError(retry_after=wait)
        # A route may let requests without a key in while a setting says so (GET /metrics with
        # FETCHML_METRICS_PUBLIC): rate limited above like any other, no principal set.
        anonymous = handler.opt.get("anonymous_setting")
        if raw is None and anonymous and getattr(services_of(connection).settings, anonymous):
            return
        # Failures are also limited per address, so rotating made-up keys cannot flood the audit
        # log; valid keys from the same address are unaffected.
        principal = await services_of(connection).keys.authenticate(
            raw, ip, failure_gate=lambda: failures.take(f"fail:{ip}", clock.monotonic())
        )
        connection.scope[PRINCIPAL_KEY] = principal  # type: ignore[literal-required]
        allowed = handler.opt.get(ROLES)
        if allowed is not None and principal.role not in allowed:
            raise ForbiddenError()

    return authenticate


ROLES = "roles"  # a route's opt: the roles that may call it; without it, any valid key


def allow(*roles: Role) -> dict[str, frozenset[Role]]:
    """The `opt` that lets these roles call a route. Set on a controller or a handler; the
    innermost one counts (Litestar merges opts outside in), so a handler narrows its controller's
    roles by naming fewer of them. The auth guard checks it: one guard per route, because
    Litestar copies the route handler for each guard it calls."""
    return {ROLES: frozenset(roles)}


ADMIN_ONLY = allow(Role.ADMIN)
USERS = allow(Role.ADMIN, Role.USER)
WORKERS = allow(Role.ADMIN, Role.WORKER)
READERS = allow(Role.ADMIN, Role.USER, Role.WORKER)
