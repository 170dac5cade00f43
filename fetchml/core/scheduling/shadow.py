"""The anti-starvation shadow: capacity held for a blocked task, backfill onto it, a kept promise.

The shadow. The highest-ordered blocked gang (or single task, with ``shadow_single_node``)
gets its capacity held on its best candidate workers (`hold_for`): tasks ordered after it
cannot use that capacity, so smaller tasks cannot starve it by always fitting first.

Backfill planning: when will a blocked task's capacity be free? A running task with a time
limit ends by its start + limit (the runner stops it there), so what it holds comes back by
then: a `Release` (`fetchml.core.scheduling.types`). A task without a limit holds its capacity
for an unknown time: for planning it never comes back. `ready_at` turns a worker's releases
into the earliest time one node of a blocked task fits there; the scheduler takes the earliest
workers for the task's shadow and calls the latest of their times its *shadow start*. A later
task may use the capacity held for it only if it will have ended by then (see
docs/scheduling.md, "Backfill"), so backfilling never delays it (`search_backfill`,
`take_backfill`).

The kept promise: a blocked gang that was promised a start keeps its claim. Recomputed from
scratch every time, that promise could be taken away: a gang arriving later with a higher
priority (or one that aged past it) became the shadow owner, took the capacity the first one
waited for, and pushed it back, possibly again and again. So the promise is kept: the caller
passes the `Promise` of the previous decision back into `decide()`, which holds the promised
gang's capacity before it walks the queue, for every task ahead of it in the order as well;
only tasks that end by the promised start may use it (backfill), so nothing placed later
delays it. The holder keeps the claim until it starts or stops being eligible (no longer
queued, can never fit, no known start any more); then the first blocked gang gets the shadow
as before. See docs/scheduling.md, "A promise is kept". The state lives with the caller (the
server keeps the latest `Decision.promise` in memory; losing it only means the next decision
picks the shadow owner afresh); `carry` computes the promise a decision makes.

The hold itself is kept on the `Cluster` (``hold``, ``shadow``, ``until``, ``promised``).

Pure: no I/O, no clock (``now`` is passed in).
"""

from __future__ import annotations

from collections.abc import Iterable

from fetchml.core.scheduling.cluster import Cluster, Held, Shape
from fetchml.core.scheduling.types import Promise, Shadow, ShadowNode, TaskReq

__all__ = [
    "carry",
    "fits_with_hold",
    "give_hold",
    "hold_for",
    "ready_at",
    "search_backfill",
    "take_backfill",
    "whole_hold",
]

_NOTHING_HELD = Held(0, 0, 0, [], None, [])


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


# -- anti-starvation ----------------------------------------------------------------------


def hold_for(cluster: Cluster, task: TaskReq, sh: Shape, now: float) -> bool:
    """Shadow-holds, for `task`, the capacity it waits for on its best candidate workers.

    Candidates are ranked by when one node is expected to fit there (from the releases;
    never, when a needed part has no known end), then by how much is missing now; the
    shadow start is the latest time of those chosen. With no releases known this is the
    ranking by what is missing now alone."""
    cluster.now = now
    held_count: dict[str, int] = {}  # GPUs on a worker held by reservations sh cannot use
    for wid, per in cluster.held.items():
        held_count[wid] = sum(1 for rid in per.values() if rid != sh.res)
    never = float("inf")
    ranked: list[tuple[float, tuple[int, int, int, int], int]] = []
    for i in range(cluster.n):
        wid = cluster.ids[i]
        _, tg, ts, tc, tm = cluster.totals[wid]
        tg -= held_count.get(wid, 0)
        if sh.gpu and ((sh.gtype is not None and cluster.gtype[i] != sh.gtype) or tg < sh.gpu):
            continue
        if ts < 1 or tc < sh.cpu or tm < sh.mem:
            continue
        usable = len(cluster.free[i]) + (len(cluster.rfree[i].get(sh.res, ())) if sh.res else 0)
        missing = (sh.gpu - usable, sh.cpu - cluster.cpu[i], sh.mem - cluster.mem[i], 1 - cluster.slots[i])
        deficit = (max(0, missing[0]), max(0, missing[1]), max(0, missing[2]), max(0, missing[3]))
        if max(missing) <= 0:
            ready: float | None = now
        elif cluster.releases[i] or i in cluster.placed_rel:
            ready = ready_at(now, missing, _releases(cluster, i, sh))
        else:
            ready = None
        ranked.append((never if ready is None else ready, deficit, i))
    if len(ranked) < sh.nodes:
        return False
    ranked.sort()
    chosen = ranked[: sh.nodes]
    start = chosen[-1][0]
    nodes = []
    for _, _, i in chosen:
        c, m, s = min(cluster.cpu[i], sh.cpu), min(cluster.mem[i], sh.mem), min(cluster.slots[i], 1)
        from_res = 0
        if sh.res is not None:
            from_res = min(sh.gpu, len(cluster.rfree[i].get(sh.res, ())))
        res_gpus = cluster.rfree[i][sh.res][:from_res] if sh.res is not None and from_res else []
        g = min(sh.gpu, from_res + len(cluster.free[i]))
        gpus = cluster.take(i, c, m, s, g, sh.res)
        cluster.hold[i] = Held(c, m, s, [x for x in gpus if x not in res_gpus], sh.res, res_gpus)
        nodes.append(ShadowNode(cluster.ids[i], gpus, c, m, s))
    cluster.shadow = Shadow(task.id, tuple(nodes), None if start == never else start)
    return True


def whole_hold(cluster: Cluster, sh: Shape) -> bool:
    """Every worker of the shadow holds a whole node of the owner: it fits there now."""
    return len(cluster.hold) == sh.nodes and all(
        h.cpu >= sh.cpu and h.mem >= sh.mem and h.slots >= 1 and len(h.gpus) + len(h.res_gpus) >= sh.gpu
        for h in cluster.hold.values()
    )


def give_hold(cluster: Cluster) -> list[tuple[int, tuple[int, ...]]]:
    """Ends the shadow, handing what it holds to its owner: (worker index, GPUs) per node."""
    nodes = [(i, tuple(sorted(h.res_gpus + h.gpus))) for i, h in cluster.hold.items()]
    cluster.hold, cluster.shadow, cluster.until, cluster.promised = {}, None, None, False
    cluster.version += 1
    return nodes


def _releases(cluster: Cluster, i: int, sh: Shape) -> list[tuple[float, int, int, int, int]]:
    """Worker i's known releases as (at, GPUs the shape may use, cpu, memory, slots)."""
    out = []
    per = cluster.held.get(cluster.ids[i])
    for rels in (cluster.releases[i], cluster.placed_rel.get(i, ())):
        for r in rels:
            if r.at is None:
                continue
            g = len(r.gpus) if not per else sum(1 for x in r.gpus if per.get(x, sh.res) == sh.res)
            out.append((r.at, g, r.cpu, r.memory_gb, r.slots))
    return out


# -- backfill: capacity held for the shadow, for tasks that end before it starts ---------


def fits_with_hold(cluster: Cluster, i: int, sh: Shape) -> bool:
    """One node of the shape fits worker i's free capacity plus what is held there."""
    h = cluster.hold.get(i, _NOTHING_HELD)
    if cluster.slots[i] + h.slots < 1 or cluster.cpu[i] + h.cpu < sh.cpu or cluster.mem[i] + h.mem < sh.mem:
        return False
    if not sh.gpu:
        return True
    if sh.gtype is not None and cluster.gtype[i] != sh.gtype:
        return False
    usable = len(cluster.free[i]) + len(h.gpus)
    if sh.res is not None:
        usable += len(cluster.rfree[i].get(sh.res, ())) + (len(h.res_gpus) if h.res == sh.res else 0)
    return usable >= sh.gpu


def search_backfill(cluster: Cluster, sh: Shape) -> list[int]:
    """Workers for a task that may backfill: those its nodes fit without held capacity
    (best fit), then the asking worker and the held ones with it."""
    chosen = cluster.search(sh)
    if len(chosen) == sh.nodes:
        return chosen
    p = cluster.prefer
    for i in (*(() if p is None else (p,)), *cluster.hold):
        if i not in chosen and fits_with_hold(cluster, i, sh):
            chosen.append(i)
            if len(chosen) == sh.nodes:
                break
    return chosen


def take_backfill(cluster: Cluster, i: int, sh: Shape) -> tuple[tuple[int, ...], bool]:
    """Takes one node from worker i: free capacity first, then held (each held unit used
    may delay the owner's actual start if running tasks end before their limits).
    Returns (GPUs, whether it used held capacity)."""
    h = cluster.hold.get(i)
    if h is None:
        return cluster.take(i, sh.cpu, sh.mem, 1, sh.gpu, sh.res), False
    res = sh.res
    own = len(cluster.rfree[i].get(res, ())) if res is not None else 0
    c, m = min(cluster.cpu[i], sh.cpu), min(cluster.mem[i], sh.mem)
    s = min(max(cluster.slots[i], 0), 1)
    g = min(sh.gpu, own + len(cluster.free[i]))
    hc, hm, hs, hg = sh.cpu - c, sh.mem - m, 1 - s, sh.gpu - g
    got: list[int] = []
    if hg and res is not None and h.res == res:
        got = h.res_gpus[:hg]
        del h.res_gpus[:hg]
    k = hg - len(got)
    got += h.gpus[:k]
    del h.gpus[:k]
    h.cpu, h.mem, h.slots = h.cpu - hc, h.mem - hm, h.slots - hs
    got += cluster.take(i, c, m, s, g, res)  # bumps the version (snapshots see the new hold)
    return tuple(sorted(got)), bool(hc or hm or hs or hg)
