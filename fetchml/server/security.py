"""Guards: rate limit and authenticate every non-public route, then check the role."""

from __future__ import annotations

import hashlib
import time
from collections.abc import Awaitable, Callable
from typing import Any

from litestar.connection import ASGIConnection
from litestar.handlers.base import BaseRouteHandler

from fetchml.core.enums import Role
from fetchml.core.errors import ForbiddenError, RateLimitedError, UnauthorizedError
from fetchml.core.ratelimit import TokenBuckets
from fetchml.server.context import PRINCIPAL_KEY, client_ip, services_of
from fetchml.services.principal import Principal

Guard = Callable[[ASGIConnection[Any, Any, Any, Any], BaseRouteHandler], Awaitable[None]]
API_KEY_HEADER = "x-api-key"


def make_auth_guard(buckets: TokenBuckets, failures: TokenBuckets) -> Guard:
    async def authenticate(connection: ASGIConnection[Any, Any, Any, Any], handler: BaseRouteHandler) -> None:
        if handler.opt.get("public"):
            return
        raw = connection.headers.get(API_KEY_HEADER)
        ip = client_ip(connection)
        now = time.monotonic()
        # Checked before any lookup, so that neither one key hammering nor a client rotating
        # made-up keys can turn into unbounded database work and audit rows.
        fail_bucket = f"ip:{ip}"
        wait = failures.wait_time(fail_bucket, now)
        if not wait:
            bucket = "k:" + hashlib.sha256(raw.encode()).hexdigest() if raw else fail_bucket
            wait = buckets.take(bucket, now)
        if wait:
            raise RateLimitedError(retry_after=wait)
        try:
            principal = await services_of(connection).keys.authenticate(raw, ip)
        except UnauthorizedError:
            failures.take(fail_bucket, time.monotonic())
            raise
        connection.scope[PRINCIPAL_KEY] = principal  # type: ignore[literal-required]

    return authenticate


def requires(*roles: Role) -> Guard:
    allowed = frozenset(roles)

    async def check_role(connection: ASGIConnection[Any, Any, Any, Any], handler: BaseRouteHandler) -> None:
        principal = connection.scope.get(PRINCIPAL_KEY)
        if not isinstance(principal, Principal) or principal.role not in allowed:
            raise ForbiddenError()

    return check_role


ADMIN_ONLY = [requires(Role.ADMIN)]
USERS = [requires(Role.ADMIN, Role.USER)]
