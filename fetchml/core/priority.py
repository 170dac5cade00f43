"""Priority aging: how long a queued task has waited lifts its effective priority."""

from __future__ import annotations


def aged_priority(priority: int, waited_hours: float, rate: float, cap: float) -> float:
    """`priority + rate * waited_hours`, at most `cap`, and never below `priority` itself.

    A negative wait (clock skew between servers) counts as zero. A cap below the task's own
    priority does not lower it: aging only ever lifts.
    """
    lifted = priority + rate * max(0.0, waited_hours)
    return float(max(priority, min(lifted, cap)))
