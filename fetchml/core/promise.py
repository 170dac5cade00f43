"""The kept shadow promise: a blocked gang that was promised a start keeps its claim (pure).

Each decision gives the shadow hold to the first blocked gang in the order and tells it when it
will start (its *shadow start*, `fetchml.core.backfill`). Recomputed from scratch every time,
that promise could be taken away: a gang arriving later with a higher priority (or one that
aged past it) became the shadow owner, took the capacity the first one waited for, and pushed
it back, possibly again and again. So the promise is kept: the caller passes the `Promise` of
the previous decision back into `decide()`, which holds the promised gang's capacity before it
walks the queue, for every task ahead of it in the order as well; only tasks that end by the
promised start may use it (backfill), so nothing placed later delays it. The holder keeps the
claim until it starts or stops being eligible (no longer queued, can never fit, no known start
any more); then the first blocked gang gets the shadow as before. See docs/scheduling.md,
"A promise is kept".

The state lives with the caller (the server keeps the latest `Decision.promise` in memory;
losing it only means the next decision picks the shadow owner afresh).
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["Promise", "carry"]


@dataclass(frozen=True, slots=True)
class Promise:
    """The shadow owner of a decision and the start it was promised (POSIX seconds)."""

    task_id: str
    start: float


def carry(kept: Promise | None, owner: str | None, start: float | None, now: float) -> Promise | None:
    """The promise a decision makes, to pass into the next one (and whose start bounds backfill
    onto the held capacity in this one).

    ``kept``: the promise passed in; ``owner``/``start``: the decision's shadow owner and its
    start as computed now. A kept owner's promise only ever moves earlier: when its start is
    computed later than promised (an estimate that drifted, a reservation that took capacity),
    the earlier time still bounds backfill, so nothing new is let in before it. A promise
    whose time has passed without the owner starting was broken by something outside the
    decision; it is renewed at the start computed now. No known start: nothing is promised.
    """
    if owner is None or start is None:
        return None
    if kept is not None and kept.task_id == owner and kept.start >= now and kept.start < start:
        return kept
    return Promise(owner, start)
