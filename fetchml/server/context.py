"""Per-request values the transport layer stores on the ASGI scope."""

from __future__ import annotations

from typing import Any

from litestar.connection import ASGIConnection

from fetchml.core.errors import UnauthorizedError
from fetchml.services.principal import Principal
from fetchml.services.wiring import Services

TRACE_KEY = "fetchml.trace_id"
PRINCIPAL_KEY = "fetchml.principal"


def trace_id_of(scope: Any) -> str:
    return str(scope.get(TRACE_KEY, ""))


def services_of(connection: ASGIConnection[Any, Any, Any, Any]) -> Services:
    services: Services = connection.app.state["services"]
    return services


def principal_of(connection: ASGIConnection[Any, Any, Any, Any]) -> Principal:
    principal = connection.scope.get(PRINCIPAL_KEY)
    if not isinstance(principal, Principal):  # a route without the auth guard: a wiring bug
        raise UnauthorizedError()
    return principal


def client_ip(connection: ASGIConnection[Any, Any, Any, Any]) -> str | None:
    return connection.client.host if connection.client else None
