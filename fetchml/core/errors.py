"""Domain errors. Each carries a contract error code and the HTTP status that code means.

The server maps them to the error envelope in one handler; the client maps the envelope
back to the same classes, so callers on either side of the wire catch the same types.
"""

from __future__ import annotations

from typing import ClassVar


class FetchmlError(Exception):
    code: ClassVar[str] = "INTERNAL_ERROR"
    status: ClassVar[int] = 500
    default_message: ClassVar[str] = "An error occurred"

    def __init__(self, message: str | None = None, *, trace_id: str | None = None) -> None:
        self.message = message or self.default_message
        self.trace_id = trace_id
        super().__init__(self.message)


class BadRequestError(FetchmlError):
    code = "BAD_REQUEST"
    status = 400
    default_message = "Invalid request format"


class ValidationError(FetchmlError):
    code = "VALIDATION_ERROR"
    status = 422
    default_message = "Validation failed"


class PayloadTooLargeError(BadRequestError):
    status = 413
    default_message = "Request body too large"


class UnauthorizedError(FetchmlError):
    code = "UNAUTHORIZED"
    status = 401
    default_message = "Invalid or missing API key"


class ForbiddenError(FetchmlError):
    code = "FORBIDDEN"
    status = 403
    default_message = "Insufficient permissions"


class NotFoundError(FetchmlError):
    code = "NOT_FOUND"
    status = 404
    default_message = "Resource not found"


class ConflictError(FetchmlError):
    code = "CONFLICT"
    status = 409
    default_message = "Conflict with the current state"


class RateLimitedError(FetchmlError):
    code = "RATE_LIMITED"
    status = 429
    default_message = "Rate limit exceeded"

    def __init__(self, message: str | None = None, *, retry_after: int = 1, trace_id: str | None = None):
        super().__init__(message, trace_id=trace_id)
        self.retry_after = retry_after


class InternalError(FetchmlError):
    code = "INTERNAL_ERROR"
    status = 500
    default_message = "An error occurred"


class ServiceUnavailableError(FetchmlError):
    code = "SERVICE_UNAVAILABLE"
    status = 503
    default_message = "Service unavailable"

    def __init__(self, message: str | None = None, *, retry_after: int = 1, trace_id: str | None = None):
        super().__init__(message, trace_id=trace_id)
        self.retry_after = retry_after


class BadGatewayError(FetchmlError):
    """A server the request is forwarded to (a Jupyter service's own server, or the fetchml
    server behind a local forward) could not be reached or broke off: 502 Bad Gateway. The
    contract's error codes are a closed enum, so the code is SERVICE_UNAVAILABLE; the status
    tells it apart from the server's own outage (503)."""

    code = "SERVICE_UNAVAILABLE"
    status = 502
    default_message = "The upstream server could not be reached"


class StorageFullError(ServiceUnavailableError):
    """The server's disk (or the database's) is full: 507 Insufficient Storage. The contract's
    error codes are a closed enum, so the code stays SERVICE_UNAVAILABLE; the status and the
    message tell it apart from a database that is down or busy."""

    status = 507
    default_message = "Storage is full: the server cannot record anything until space is freed"


ERRORS_BY_CODE: dict[str, type[FetchmlError]] = {
    cls.code: cls
    for cls in (
        BadRequestError,
        ValidationError,
        UnauthorizedError,
        ForbiddenError,
        NotFoundError,
        ConflictError,
        RateLimitedError,
        InternalError,
        ServiceUnavailableError,
    )
}
