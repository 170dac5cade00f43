"""The one table of legal task transitions. Anything not listed is a CONFLICT."""

from __future__ import annotations

from fetchml.core.enums import TaskStatus as S
from fetchml.core.errors import ConflictError

TRANSITIONS: dict[S, frozenset[S]] = {
    # queued -> failed is a cancel or an unplaceable task; queued -> preparing is a claim.
    S.QUEUED: frozenset({S.PREPARING, S.FAILED}),
    # Any active state may go back to queued when its lease is lost and retries remain.
    S.PREPARING: frozenset({S.RUNNING, S.FAILED, S.QUEUED}),
    S.RUNNING: frozenset({S.COLLECTING, S.FAILED, S.QUEUED}),
    S.COLLECTING: frozenset({S.COMPLETED, S.FAILED, S.QUEUED}),
    S.COMPLETED: frozenset(),
    S.FAILED: frozenset(),
}

CANCELLED_ERROR = "cancelled"
# The error of an attempt its worker stopped at the task's time limit: final, never retried.
TIME_LIMIT_ERROR = "time limit"


def can_transition(current: S, new: S) -> bool:
    return new in TRANSITIONS[current]


def check_transition(current: S, new: S) -> None:
    if not can_transition(current, new):
        raise ConflictError(f"Task cannot move from {current.value} to {new.value}")
