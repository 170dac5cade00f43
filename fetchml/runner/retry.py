"""What the worker retries when it talks to the server: the answers a later try may not get,
and how long it waits between tries. Shared by task reports, registration and Jupyter service
reports."""

from __future__ import annotations

from fetchml.client.base import ServerUnreachableError
from fetchml.core.errors import InternalError, RateLimitedError, ServiceUnavailableError

# The server is down, busy, or behind a proxy that failed.
TRANSIENT = (ServerUnreachableError, ServiceUnavailableError, InternalError, RateLimitedError)
REPORT_BACKOFF = (0.5, 1.0, 2.0, 4.0, 5.0)
