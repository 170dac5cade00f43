"""Backfill planning for the scheduler: when will a blocked task's capacity be free? (pure)

A running task with a time limit ends by its start + limit (the runner stops it there), so
what it holds comes back by then: a `Release`. A task without a limit holds its capacity for an
unknown time: for planning it never comes back. `ready_at` turns a worker's releases into the
earliest time one node of a blocked task fits there; the scheduler takes the earliest workers
for the task's shadow and calls the latest of their times its *shadow start*. A later task may
use the capacity held for it only if it will have ended by then (see docs/scheduling.md,
"Backfill"), so backfilling never delays it.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

__all__ = ["Release", "fmt_duration", "ready_at"]


@dataclass(frozen=True, slots=True)
class Release:
    """What one running task (one node of it) frees on its worker when it ends.

    ``at``: POSIX seconds, the node's start + the task's time limit; None when the task has no
    limit (its capacity never frees, for planning). A release already due (``at`` <= now: the
    task is being stopped, or overran) counts as now. ``gpus`` are indices on that worker.
    """

    at: float | None
    gpus: tuple[int, ...] = ()
    cpu: int = 0
    memory_gb: int = 0
    slots: int = 1


def ready_at(
    now: float,
    missing: tuple[int, int, int, int],
    releases: Iterable[tuple[float, int, int, int, int]],
) -> float | None:
    """The earliest time (>= now) at which `releases` make up what is `missing` on one worker.

    ``missing``: (GPUs, CPUs, memory, slots) short of one node now (<= 0: not short).
    ``releases``: (at, GPUs, CPUs, memory, slots) that come back, the GPUs counted only if the
    task may use them (not reserved for others). None when they never make it up.
    """
    g, c, m, s = missing
    if g <= 0 and c <= 0 and m <= 0 and s <= 0:
        return now
    # Sorting whole tuples keeps equal times in a fixed order: the result is deterministic.
    for at, rg, rc, rm, rs in sorted(releases):
        g -= rg
        c -= rc
        m -= rm
        s -= rs
        if g <= 0 and c <= 0 and m <= 0 and s <= 0:
            return at if at > now else now
    return None


def fmt_duration(seconds: float) -> str:
    """A wait for people, rounded down to the minute (so "at most" claims stay true)."""
    minutes = int(max(0.0, seconds) // 60)
    if minutes < 1:
        return "under a minute"
    days, rest = divmod(minutes, 24 * 60)
    hours, mins = divmod(rest, 60)
    if days:
        return f"{days}d {hours}h" if hours else f"{days}d"
    if hours:
        return f"{hours}h {mins}m" if mins else f"{hours}h"
    return f"{mins}m"
