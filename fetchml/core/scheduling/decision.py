"""The decision itself: `decide` walks the queue in order and places what fits.

Each task in the decision order (`fetchml.core.scheduling.order`) is placed if it fits the
capacity left by the tasks before it (`fetchml.core.scheduling.cluster`); a task that does not
fit gets its shape's pending reason (`fetchml.core.scheduling.explain`), and the highest
blocked gang gets the anti-starvation shadow, backfill and the kept promise
(`fetchml.core.scheduling.shadow`). The policy is summed up in the package docstring and
written down in docs/scheduling.md.

Only the head of the queue is walked in Python: capacity only shrinks during a decision, so
once a resource *shape* fails to fit, every later task of that shape fails too; the answer
and its pending reason are memoised per shape, and the walk stops when every shape has failed
(see the performance notes in the package docstring).

Pure and deterministic: no I/O, no clock (``now`` is passed in), no randomness.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from itertools import compress, repeat
from operator import attrgetter, ge, indexOf, itemgetter

from fetchml.core.aging import DEFAULT_AGING_CAP, DEFAULT_AGING_RATE, aged_priority, check_aging, hours_waited
from fetchml.core.scheduling import explain
from fetchml.core.scheduling.cluster import Cluster, Shape
from fetchml.core.scheduling.order import ordered
from fetchml.core.scheduling.shadow import (
    carry,
    give_hold,
    hold_for,
    search_backfill,
    take_backfill,
    whole_hold,
)
from fetchml.core.scheduling.types import (
    KIND_PRIORITY,
    KIND_RESERVATION,
    KIND_RESOURCE,
    REASON_NO_WORKERS,
    Decision,
    NodePlacement,
    Placement,
    Promise,
    Reasons,
    ReservationHold,
    Shadow,
    TaskReq,
    WorkerFree,
)

__all__ = ["decide"]

_SHADOWABLE = (KIND_PRIORITY, KIND_RESOURCE, KIND_RESERVATION)
_PROBE_AFTER = 256  # consecutive memoised failures before checking whether anything can still fit

_ID = attrgetter("id")
_SHAPE = attrgetter("shape")
_LIMIT = attrgetter("time_limit_s")
_NO_LIMIT = {None: float("inf")}  # .get(limit, limit): a task without a limit never ends
_FIRST_TWO = itemgetter(0, 1)
_GE: Callable[[float, float], bool] = ge


def decide(
    queue: Sequence[TaskReq],
    workers: Sequence[WorkerFree],
    reservations: Sequence[ReservationHold] = (),
    *,
    now: float,
    aging_rate: float = DEFAULT_AGING_RATE,
    aging_cap: float = DEFAULT_AGING_CAP,
    shadow_single_node: bool = False,
    prefer: str | None = None,
    promise: Promise | None = None,
) -> Decision:
    """One scheduling decision over the whole queue and cluster. See the package docstring.

    ``queue``: the queued tasks, any order (fastest: by seq, or by (priority desc, seq) as the
    SQL already sorts). ``workers``: every known worker with its free capacity. ``reservations``:
    the active ones only. ``now``: POSIX seconds. ``shadow_single_node``: also give the
    anti-starvation shadow to a blocked single-node task when it is the highest blocked task.
    ``prefer``: a worker id that gets any task that fits it (the one a claim came from), ahead
    of the best-fit choice; order, reservations and holds are unchanged by it.
    ``promise``: the previous decision's ``Decision.promise``: while its owner is queued and
    blocked it keeps the shadow, held before the walk (``fetchml.core.scheduling.shadow``).
    """
    check_aging(aging_rate, aging_cap)
    if not queue:
        return Decision([], {})
    cluster = Cluster(workers, reservations, prefer)
    if cluster.n == 0:
        return Decision([], dict.fromkeys(map(_SHAPE, queue), REASON_NO_WORKERS), queue=queue)

    all_shapes: set[str] = set()  # filled on the first probe only (it costs a pass over the queue)
    shapes: dict[str, Shape] = {}
    failed: dict[str, tuple[int, str]] = {}
    no_shadow_for: set[str] = set()
    assignments: list[Placement] = []
    owner_reason: str | None = None
    scanned = 0
    streak, probe_at = 0, _PROBE_AFTER
    # Backfill, once a shadow with a known start exists: a later task whose time limit ends by
    # then may also use the held capacity. Free + held capacity only shrinks as well, so a
    # shape that failed to backfill once fails for the rest of the decision.
    bf_start: float | None = None
    bf_failed: set[str] = set()

    def shape_of(key: str) -> Shape:
        sh = shapes.get(key)
        if sh is None:
            sh = shapes[key] = cluster.make_shape(key)
            sh.never = explain.never(cluster, sh)
        return sh

    def fail(key: str, sh: Shape) -> tuple[int, str]:
        f = failed[key] = sh.never if sh.never is not None else explain.reason(cluster, sh)
        return f

    def held_text(reason: str, shadow: Shadow) -> str:
        where = ", ".join(n.worker_id for n in shadow.nodes)
        text = f"{reason}; capacity on {where} is held for it"
        if shadow.start is not None:
            text += f"; expected to start in {explain.fmt_duration(shadow.start - now)}"
        return text

    def maybe_hold(task: TaskReq, sh: Shape, kind: int) -> None:
        nonlocal owner_reason, bf_start
        if (
            cluster.shadow is None
            and kind in _SHADOWABLE
            and (sh.nodes > 1 or shadow_single_node)
            and sh.key not in no_shadow_for
        ):
            if hold_for(cluster, task, sh, now):
                assert cluster.shadow is not None
                owner_reason = held_text(failed[sh.key][1], cluster.shadow)
                bf_start = cluster.until = cluster.shadow.start
            else:
                no_shadow_for.add(sh.key)

    def keep(promise: Promise) -> tuple[TaskReq | None, bool]:
        """Holds, before the walk, for the owner of a kept promise if it is still queued and
        blocked. Returns (that task, whether it fits whole in the hold: then it is placed there
        at its turn)."""
        nonlocal owner_reason, bf_start
        try:
            task = queue[indexOf(map(_ID, queue), promise.task_id)]
        except ValueError:
            return None, False  # started, cancelled, or not in this (partial) queue
        sh = shape_of(task.shape)
        if sh.never is not None or not (sh.nodes > 1 or shadow_single_node):
            return None, False
        own = explain.reason(cluster, sh)  # its own reason, against the capacity before anything is held
        if not hold_for(cluster, task, sh, now):
            return None, False
        assert cluster.shadow is not None
        owner_reason = held_text(own[1], cluster.shadow)
        kept = carry(promise, task.id, cluster.shadow.start, now)
        bf_start = cluster.until = None if kept is None else kept.start
        cluster.promised = True
        return task, whole_hold(cluster, sh)

    def place_kept(task: TaskReq, aged: float) -> None:
        """The kept owner's turn, when it fits whole in its hold: it starts there."""
        nonlocal owner_reason, bf_start
        sh = shapes[task.shape]
        nodes = give_hold(cluster)
        lim = task.time_limit_s
        if lim is not None:
            for i, gpus in nodes:
                cluster.note_release(i, now + lim, sh, gpus)
        placed = tuple(NodePlacement(rank, cluster.ids[i], gpus) for rank, (i, gpus) in enumerate(nodes))
        assignments.append(Placement(task.id, placed, aged, sh.res))
        owner_reason, bf_start = None, None

    def may_backfill(task: TaskReq) -> bool:
        lim = task.time_limit_s
        return (
            lim is not None and bf_start is not None and now + lim <= bf_start and task.shape not in bf_failed
        )

    def backfill(task: TaskReq, key: str, aged: float) -> bool:
        """Places a task that may backfill and does not fit free capacity alone; False when
        it does not fit with the held capacity either (then its shape never will)."""
        sh = shape_of(key)
        if sh.never is None:
            chosen = search_backfill(cluster, sh)
            if len(chosen) == sh.nodes:
                used = False
                nodes = []
                for rank, i in enumerate(chosen):
                    gpus, u = take_backfill(cluster, i, sh)
                    used = used or u
                    nodes.append(NodePlacement(rank, cluster.ids[i], gpus))
                assignments.append(Placement(task.id, tuple(nodes), aged, sh.res, backfill=used))
                return True
        bf_failed.add(key)
        return False

    def backfill_tail(aged: float, task: TaskReq) -> None:
        """Nothing more fits but held capacity: place, in order, the tasks after this one that
        may backfill; the others cannot fit (free capacity only shrinks) and keep their shape's
        reason. One pass over the queue, paid only when a shadow has a known start."""
        nonlocal scanned
        if bf_start is None:
            return
        seq = task.seq
        after: list[tuple[float, int, TaskReq]] = []
        # C-level pre-filter (no limit -> inf) with a second of slack; the exact test follows
        limits: Iterator[float] = map(_NO_LIMIT.get, map(_LIMIT, queue), map(_LIMIT, queue))
        for t in compress(queue, map(_GE, repeat(bf_start - now + 1.0), limits)):
            lim = t.time_limit_s
            if lim is None or now + lim > bf_start or t.shape in bf_failed:
                continue
            a = aged_priority(t.priority, hours_waited(t.created_at, now), aging_rate, aging_cap)
            if a < aged or (a == aged and t.seq > seq):  # after this task (order_key, inlined)
                after.append((-a, t.seq, t))
        if not after:
            return
        # Every other shape meets the capacity left here: settle their reasons before the
        # backfills take it (else they would read "waiting behind higher-priority tasks").
        all_failed_after_probe()
        after.sort(key=_FIRST_TWO)
        for neg_a, _, t in after:
            scanned += 1
            if t.shape not in bf_failed:
                backfill(t, t.shape, -neg_a)

    def all_failed_after_probe() -> bool:
        """Settles every shape not yet tried that cannot fit now; True when nothing can fit."""
        if not all_shapes:
            all_shapes.update(map(_SHAPE, queue))
        for key in all_shapes:
            if key not in failed:
                sh = shape_of(key)
                if sh.never is not None or len(cluster.search(sh)) < sh.nodes:
                    fail(key, sh)
        return len(failed) == len(all_shapes)

    kept, kept_whole = keep(promise) if promise is not None else (None, False)
    for aged, qi in ordered(queue, now, aging_rate, aging_cap):
        scanned += 1
        task = queue[qi]
        if task is kept:
            kept = None
            if kept_whole:
                place_kept(task, aged)
            continue
        key = task.shape
        f = failed.get(key)
        if f is not None:
            if bf_start is not None and may_backfill(task) and backfill(task, key, aged):
                streak = 0
            else:
                maybe_hold(task, shapes[key], f[0])
                streak += 1
            if cluster.total_slots <= 0:
                backfill_tail(aged, task)
                break
            if streak >= probe_at:
                streak, probe_at = 0, probe_at * 2
                if all_failed_after_probe():
                    backfill_tail(aged, task)
                    break
            continue
        streak = 0
        sh = shape_of(key)
        chosen = [] if sh.never is not None else cluster.search(sh)
        if len(chosen) == sh.nodes:
            nodes = tuple(
                NodePlacement(rank, cluster.ids[i], cluster.take(i, sh.cpu, sh.mem, 1, sh.gpu, sh.res))
                for rank, i in enumerate(chosen)
            )
            lim = task.time_limit_s
            # (while a kept owner is still to come, it may start and leave the shadow to another)
            if lim is not None and (cluster.shadow is None or kept is not None):
                for node, i in zip(nodes, chosen, strict=True):
                    cluster.note_release(i, now + lim, sh, node.gpus)
            assignments.append(Placement(task.id, nodes, aged, sh.res))
        else:
            kind, _ = fail(key, sh)
            if not (bf_start is not None and may_backfill(task) and backfill(task, key, aged)):
                maybe_hold(task, sh, kind)
                if all_shapes and len(failed) == len(all_shapes):
                    backfill_tail(aged, task)
                    break
        if cluster.total_slots <= 0:
            backfill_tail(aged, task)
            break

    if kept is not None and kept_whole:  # the walk stopped before its turn
        waited = hours_waited(kept.created_at, now)
        place_kept(kept, aged_priority(kept.priority, waited, aging_rate, aging_cap))

    # Tasks not walked (the walk stopped because nothing more can fit) get the reason of their
    # shape against the final state, which is exactly the state they would have met; computed
    # on demand, once per shape. Shapes missing from `failed` after a full walk were all placed.
    def late_reason(key: str) -> str:
        return fail(key, shape_of(key))[1]

    reasons = Reasons(late_reason, {k: v[1] for k, v in failed.items()})
    shadow = cluster.shadow
    return Decision(
        assignments,
        reasons,
        shadow=shadow,
        scanned=scanned,
        queue=queue,
        owner_reason=owner_reason,
        promise=None if shadow is None else carry(promise, shadow.task_id, shadow.start, now),
    )
