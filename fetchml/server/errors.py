"""The one place exceptions become HTTP responses, always in the contract's envelope."""

from __future__ import annotations

import logging
import re
from typing import Any

from litestar import Request, Response
from litestar.exceptions import HTTPException, SerializationException, ValidationException

from fetchml.core.errors import FetchmlError, RateLimitedError, ServiceUnavailableError
from fetchml.server.context import trace_id_of
from fetchml.server.middleware import log_safe
from fetchml.services.write_queue import describe_fault, storage_error

log = logging.getLogger("fetchml.server")

_HTTP_CODES = {
    400: "BAD_REQUEST",
    401: "UNAUTHORIZED",
    403: "FORBIDDEN",
    404: "NOT_FOUND",
    409: "CONFLICT",
    422: "VALIDATION_ERROR",
    429: "RATE_LIMITED",
    503: "SERVICE_UNAVAILABLE",
}

_HTTP_MESSAGES = {
    404: "Resource not found",
    405: "Method not allowed",
    413: "Request body too large",
}


def envelope(
    status: int, code: str, message: str, trace_id: str, headers: dict[str, str] | None = None
) -> Response[Any]:
    return Response(
        content={"error": message, "code": code, "trace_id": trace_id},
        status_code=status,
        headers=headers,
        media_type="application/json",
    )


def _public_name(request: Request[Any, Any, Any], key: str) -> str:
    """The name the client used: a query parameter declared as `start` but sent as `from` is `from`."""
    head, _, rest = key.partition(".")
    try:
        params = request.route_handler.parsed_fn_signature.parameters
        kwarg = params[head].kwarg_definition if head in params else None
    except Exception:  # no route (404/405) or an unusual handler: keep the key as it is
        return key
    alias = getattr(kwarg, "query", None) or getattr(kwarg, "header", None)
    return f"{alias}.{rest}" if alias and rest else alias or key


_MODEL_NAME = re.compile(r" or instance of \w+")


def _body_optional(request: Request[Any, Any, Any]) -> bool:
    try:
        data = request.route_handler.parsed_fn_signature.parameters.get("data")
    except Exception:  # no route (404/405)
        return False
    return data is not None and bool(data.has_default)


def _items(request: Request[Any, Any, Any], exc: ValidationException) -> list[dict[str, Any]]:
    """The faults Litestar lists. When a parameter failed, it also lists an absent body (key
    `data`, message `'data'`: a KeyError's text), even one the route takes as optional (a claim
    without a report): that is no fault."""
    optional = _body_optional(request)
    return [
        i
        for i in exc.extra or []
        if isinstance(i, dict) and not (optional and i.get("key") == "data" and i.get("message") == "'data'")
    ]


def _validation_message(request: Request[Any, Any, Any], exc: ValidationException) -> str:
    parts = []
    for item in _items(request, exc):
        if isinstance(item, dict):
            key = item.get("key")
            # pydantic names the model class ("... or instance of CreateTaskRequest"): internal.
            msg = _MODEL_NAME.sub("", str(item.get("message", "invalid value")))
            if key == "data":  # the body as a whole: absent, or not the JSON object expected
                parts.append("request body: a JSON object is required")
                continue
            parts.append(f"{_public_name(request, str(key))}: {msg}" if key else msg)
    return "Validation failed: " + "; ".join(parts) if parts else "Validation failed"


_PARAMETER_SOURCES = frozenset({"query", "path", "header", "cookie"})


# Litestar's words for a required parameter that was not sent (it gives no `extra` for it).
_MISSING_PARAMETER = re.compile(r"^Missing required (query|path|header|cookie) parameter '([^']*)'")


def _missing_parameter(exc: ValidationException) -> str | None:
    m = _MISSING_PARAMETER.match(str(exc.detail or ""))
    return f"Missing required {m.group(1)} parameter '{m.group(2)}'" if m else None


def _is_parameter_error(request: Request[Any, Any, Any], exc: ValidationException) -> bool:
    """Every fault is in a parameter, none in the body (Litestar tags each with its source)."""
    items = _items(request, exc)
    # ParamType is a (str, Enum): str() of it is its name, .value the source.
    return bool(items) and all(
        getattr(i.get("source"), "value", i.get("source")) in _PARAMETER_SOURCES
        and not str(i.get("key", "")).startswith("data")
        for i in items
    )


def handle_exception(request: Request[Any, Any, Any], exc: Exception) -> Response[Any]:
    trace_id = trace_id_of(request.scope)
    if not isinstance(exc, FetchmlError) and (mapped := storage_error(exc)) is not None:
        # A read (or the key lookup) met a database that is down, full or locked: an outage the
        # client should wait out, not a bug. One line in the log, no traceback per request.
        log.warning(
            "%s %s: %s (%s) trace_id=%s",
            log_safe(request.method),
            log_safe(request.url.path),
            mapped.message,
            describe_fault(exc),
            trace_id,
        )
        exc = mapped
    if isinstance(exc, FetchmlError):
        headers = (
            {"Retry-After": str(exc.retry_after)}
            if isinstance(exc, (RateLimitedError, ServiceUnavailableError))
            else None
        )
        return envelope(exc.status, exc.code, exc.message, trace_id, headers)
    if isinstance(exc, ValidationException):
        if (missing := _missing_parameter(exc)) is not None:
            return envelope(400, "BAD_REQUEST", missing, trace_id)
        if _is_parameter_error(request, exc):
            # The contract answers a bad query, path or header parameter with 400 BAD_REQUEST
            # (GET /v1/tasks); 422 VALIDATION_ERROR is for a body that does not validate.
            return envelope(400, "BAD_REQUEST", _validation_message(request, exc), trace_id)
        return envelope(422, "VALIDATION_ERROR", _validation_message(request, exc), trace_id)
    if isinstance(exc, HTTPException) and exc.status_code < 500:
        status = exc.status_code
        code = _HTTP_CODES.get(status, "BAD_REQUEST")
        message = _HTTP_MESSAGES.get(status) or _safe_client_detail(exc)
        return envelope(status, code, message, trace_id)
    if isinstance(exc, RecursionError) and "deserializ" in str(exc):
        # msgspec gives up on absurdly nested JSON with a RecursionError: a client fault.
        return envelope(400, "BAD_REQUEST", "Malformed JSON body: nested too deeply", trace_id)
    if isinstance(exc, HTTPException) and exc.status_code == 503:
        return envelope(503, "SERVICE_UNAVAILABLE", "Service unavailable", trace_id)
    log.error("unhandled error trace_id=%s", trace_id, exc_info=exc)
    return envelope(500, "INTERNAL_ERROR", "An error occurred", trace_id)


def _safe_client_detail(exc: HTTPException) -> str:
    detail = str(exc.detail or "")
    if isinstance(exc.__cause__, SerializationException):
        # The decoder's message names the position of the fault and nothing internal.
        return f"Malformed JSON body: {detail}"[:200]
    return detail if 0 < len(detail) <= 200 else "Invalid request format"
