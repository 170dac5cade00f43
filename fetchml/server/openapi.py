"""The error side of the server's own OpenAPI document (/schema), declared in one place.

Litestar documents a handler's success response from its signature, and for errors only a 400
with its own exception schema, which is not what we send. Every error we send is the contract's
envelope (fetchml.server.errors), so every error status a route can answer is declared here with
that schema: the ones every route shares follow from its shape (authenticated or public, has
parameters, has a body), the ones particular to a route come from its handler's
`opt={"errors": (...)}`.
"""

from __future__ import annotations

from http import HTTPStatus
from typing import Literal

from litestar import Litestar
from litestar.openapi.datastructures import ResponseSpec
from litestar.routes import HTTPRoute
from pydantic import BaseModel

ErrorCode = Literal[
    "BAD_REQUEST",
    "UNAUTHORIZED",
    "FORBIDDEN",
    "NOT_FOUND",
    "CONFLICT",
    "RATE_LIMITED",
    "INTERNAL_ERROR",
    "SERVICE_UNAVAILABLE",
    "VALIDATION_ERROR",
]


class ErrorResponse(BaseModel):
    """The contract's error envelope (its schema name, so /schema and the contract agree)."""

    error: str
    code: ErrorCode
    trace_id: str


_DESCRIPTIONS = {
    400: "Invalid request: a query, path or header parameter, or a malformed body",
    401: "Invalid or missing API key",
    403: "Insufficient permissions",
    404: "Resource not found",
    409: "Conflict with the resource's current state",
    413: "Request body too large",
    422: "Validation failed",
    429: "Rate limit exceeded (Retry-After says when to retry)",
    500: "Internal error",
    503: "Service unavailable: the database is down or locked (Retry-After says when to retry)",
    507: "Insufficient storage: the server's disk or database is full",
}

# Parameters the handler receives from Litestar, not from the client.
_INJECTED = frozenset({"self", "request", "state", "scope", "socket"})
_BODY_METHODS = frozenset({"POST", "PUT", "PATCH"})


def _statuses(route: HTTPRoute, handler: object) -> set[int]:
    params = set(handler.parsed_fn_signature.parameters) - _INJECTED  # type: ignore[attr-defined]
    opt: dict[str, object] = handler.opt  # type: ignore[attr-defined]
    methods: set[str] = set(handler.http_methods)  # type: ignore[attr-defined]
    statuses = {500}
    if not opt.get("public"):
        statuses |= {401, 403, 429, 503}
    if params - {"data"}:
        statuses.add(400)  # a query, path or header parameter that does not parse
    if route.path_parameters:
        statuses.add(404)
    if "data" in params:
        statuses |= {400, 413, 422}  # malformed JSON, over the body limit, a field out of range
    if methods & (_BODY_METHODS | {"DELETE"}) and not opt.get("public"):
        statuses.add(507)  # a write can meet a full disk
    extra = opt.get("errors", ())
    statuses.update(extra)  # type: ignore[arg-type]
    return statuses


def document_errors(app: Litestar) -> None:
    """Declare, on every route, each error status it can answer, with the envelope's schema.
    Runs before the document is first built (Litestar builds it lazily, on the first request)."""
    for route in app.routes:
        if not isinstance(route, HTTPRoute):
            continue
        for handler in route.route_handlers:
            own = dict(handler.responses or {})
            handler.responses = {
                status: ResponseSpec(
                    data_container=ErrorResponse,
                    description=_DESCRIPTIONS.get(status) or HTTPStatus(status).phrase,
                    generate_examples=False,
                )
                for status in sorted(_statuses(route, handler))
            } | own
