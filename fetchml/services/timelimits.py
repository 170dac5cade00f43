"""Time limits of tasks and Jupyter services (docs/scheduling.md#time-limits).

A limit is asked in minutes (`time_limit_minutes`), checked against the server's ceiling and
stored with the task or service. Tasks are stopped by their worker, which gets the limit in
seconds in its assignment and measures it from the start of the process (fetchml.runner
.timelimit); a task so stopped fails with error "time limit" and is never retried. Jupyter
services are stopped by the server's sweep (`jupyter.stop_overtime_services`), measured from their
first `running`, as the idle cull stops them.

`time_limit_unit_seconds` is the length of one minute of a limit: 60, except in tests, which
shorten it so that a real worker stops a one-minute task within a second.
"""

from __future__ import annotations

from fetchml.core.errors import ValidationError

FIELD = "time_limit_minutes"
TIME_LIMIT_STOP = "time_limit"  # a Jupyter service's stop_reason and audit action


def effective_limit(requested: int | None, default: int | None, maximum: int | None) -> int | None:
    """The limit a new task or service gets: its own, else `default`; 422 (naming the field)
    above the server's `maximum` (FETCHML_MAX_TIME_LIMIT_MINUTES)."""
    limit = requested if requested is not None else default
    if limit is not None and maximum is not None and limit > maximum:
        raise ValidationError(
            f"Validation failed: {FIELD}: at most {maximum} minutes on this server, got {limit}"
        )
    return limit


def limit_seconds(minutes: int | None, unit_seconds: float) -> float | None:
    """What a worker's assignment carries: the limit in seconds, or None for no limit."""
    return None if minutes is None else minutes * unit_seconds
