"""Priority aging: how long a task has waited raises its effective priority, up to a cap.

    priority_aged = max(priority, min(cap, priority + rate * hours_waited))

Defaults (see docs/scheduling.md for the reasoning):

- rate 1.0 per hour: a priority-1 task reaches a fresh priority-10 task after 9 hours, so
  nothing waits much longer than a working day behind a stream of urgent work.
- cap 15.0 = MAX_PRIORITY (10) + headroom 5.0: a task that has waited long enough can rise
  above every fresh task (the headroom), and past the cap all old tasks tie and run FIFO, so
  aging never reorders two tasks that have both waited "long enough".

Pure: time is passed in.
"""

from __future__ import annotations

MIN_PRIORITY = 1
MAX_PRIORITY = 10
DEFAULT_AGING_RATE = 1.0  # priority points per hour waited
DEFAULT_AGING_HEADROOM = 5.0
DEFAULT_AGING_CAP = MAX_PRIORITY + DEFAULT_AGING_HEADROOM  # 15.0


def hours_waited(created_at: float, now: float) -> float:
    """Hours between `created_at` and `now` (POSIX seconds); a clock skew into the future is 0."""
    waited = (now - created_at) / 3600.0
    return waited if waited > 0.0 else 0.0


def aged_priority(
    priority: float,
    waited_hours: float,
    rate: float = DEFAULT_AGING_RATE,
    cap: float = DEFAULT_AGING_CAP,
) -> float:
    """`priority + rate * waited_hours`, at most `cap`, and never below `priority` itself.

    A negative wait (clock skew between servers) counts as 0; a cap below the task's own
    priority does not lower it (aging only ever lifts). The scheduler orders tasks by exactly this value
    (descending), then by submission order, so the value shown to users and the order they
    see are one computation.
    """
    lifted = priority + rate * (waited_hours if waited_hours > 0.0 else 0.0)
    capped = cap if lifted > cap else lifted
    return float(priority if priority > capped else capped)


def check_aging(rate: float, cap: float) -> None:
    """Rejects settings under which aging would not be monotone (a negative rate) or NaN."""
    if not rate >= 0.0:
        raise ValueError(f"aging rate must be >= 0 per hour, got {rate!r}")
    if not cap == cap:  # NaN
        raise ValueError("aging cap must be a number")
