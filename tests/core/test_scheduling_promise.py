"""A kept shadow promise (fetchml.core.scheduling.shadow, `decide(..., promise=)`).

The owner of the previous decision's shadow keeps it while it is queued and blocked: its
capacity is held before the walk, against every task (ahead of it in the order too), and only
tasks that end by the promised start may use it. Checked by examples and, over random
clusters, by replaying decisions (every placement fits at its turn, the kept hold taken first;
every pending task does not) and by playing a few decisions in a row, with tasks arriving,
ending and time passing in between: a promised start is never pushed later, and a promised gang
has started once its promised time has come.
"""

from __future__ import annotations

import random
from dataclasses import replace
from typing import Any

import pytest
from hypothesis import HealthCheck, assume, event, given, settings
from hypothesis import strategies as st

from fetchml.core.scheduling import (
    REASON_PROMISED,
    Decision,
    Promise,
    Release,
    ReservationHold,
    TaskReq,
    WorkerFree,
    decide,
    order_key,
)
from fetchml.core.scheduling.shadow import carry
from tests.core.test_scheduling_backfill import (
    NOW,
    H,
    check_placement,
    merged,
    placed,
    reference_start,
    run,
    scenario_st,
    task,
    task_st,
    two_busy_workers,
    worker,
)
from tests.core.test_scheduling_properties import (
    Free,
    held_by,
    initial_state,
    may_use,
    node_fits,
    usable_gpus,
)

GANG = {"gpu": 8, "node_count": 2}

# -- examples ---------------------------------------------------------------------------------


def test_a_later_higher_priority_gang_does_not_take_a_kept_promise() -> None:
    # "low" was promised w-1 and w-2 at +2 h; "high" arrives with a higher priority
    d1 = run([task("low", 1, 2, **GANG)], two_busy_workers())
    assert d1.promise == Promise("low", NOW + 2 * H)
    queue = [task("low", 1, 2, **GANG), task("high", 2, 9, **GANG)]
    fresh = run(queue, two_busy_workers())
    assert fresh.shadow is not None and fresh.shadow.task_id == "high"  # what used to happen
    d = run(queue, two_busy_workers(), promise=d1.promise)
    assert d.shadow is not None and d.shadow.task_id == "low" and d.shadow.start == NOW + 2 * H
    assert d.promise == d1.promise
    assert d.pending["high"] == "waiting for 2 nodes; 0 fit now"  # it waits; nothing is held for it
    assert d.pending["low"] == (
        "waiting for 2 nodes; 0 fit now; capacity on w-1, w-2 is held for it; expected to start in 2h"
    )


def test_tasks_ahead_of_the_owner_may_only_backfill_its_hold() -> None:
    promise = Promise("low", NOW + 2 * H)
    urgent = task("urgent", 2, 10, gpu=4)  # no limit: would hold w-1's 4 GPUs for ever
    quick = task("quick", 3, 10, gpu=4, limit_h=1)  # ends before +2 h
    queue = [task("low", 1, 2, **GANG), urgent, quick]
    assert placed(run(queue, two_busy_workers())) == {"urgent": ("w-1",), "quick": ("w-2",)}
    d = run(queue, two_busy_workers(), promise=promise)
    assert placed(d) == {"quick": ("w-1",)} and d.assignments[0].backfill
    assert d.pending["urgent"].startswith(f"{REASON_PROMISED} low")
    assert d.shadow is not None and d.shadow.start == NOW + 2 * H


def test_the_owner_starts_on_its_hold_and_the_next_gang_gets_the_shadow() -> None:
    workers = [
        worker("w-1", tuple(range(8))),
        worker("w-2", tuple(range(8))),
        worker("w-3", (), [Release(NOW + H, tuple(range(8)))]),
        worker("w-4", (), [Release(NOW + H, tuple(range(8)))]),
    ]
    queue = [task("urgent", 1, 10, gpu=8), task("low", 2, 1, **GANG), task("next", 3, 1, **GANG)]
    d = run(queue, workers, promise=Promise("low", NOW + 0.5 * H))
    assert placed(d) == {"low": ("w-1", "w-2")}
    assert d.pending["urgent"].startswith(f"{REASON_PROMISED} low")
    assert d.shadow is not None and d.shadow.task_id == "next" and d.promise == Promise("next", NOW + H)
    assert d.pending["next"].endswith("is held for it; expected to start in 1h")


def test_the_owner_starts_even_when_the_walk_stops_before_its_turn() -> None:
    # the hold takes the only free slots: the walk stops at the first task, ahead of the owner
    workers = [worker("w-1", tuple(range(8)), slots=1), worker("w-2", tuple(range(8)), slots=1)]
    queue = [task("urgent", 1, 10, gpu=1), task("low", 2, 1, **GANG)]
    d = run(queue, workers, promise=Promise("low", NOW))
    assert placed(d) == {"low": ("w-1", "w-2")} and d.scanned == 1
    assert d.shadow is None and d.promise is None
    assert set(d.pending) == {"urgent"} and d.pending["urgent"].startswith(f"{REASON_PROMISED} low")


def test_an_owner_no_longer_queued_or_eligible_is_dropped() -> None:
    queue = [task("high", 2, 9, **GANG), task("single", 3, 9, gpu=8)]
    plain = run(queue, two_busy_workers())
    for owner in ("gone", "single"):  # not queued; a single-node task without shadow_single_node
        d = run(queue, two_busy_workers(), promise=Promise(owner, NOW + H))
        assert (d.assignments, d.pending, d.shadow, d.promise) == (
            plain.assignments,
            plain.pending,
            plain.shadow,
            plain.promise,
        )
    never = [*queue, task("huge", 4, 1, gpu=16, node_count=2)]
    d = run(never, two_busy_workers(), promise=Promise("huge", NOW + H))
    assert d.shadow is not None and d.shadow.task_id == "high"


def test_the_promise_bounds_backfill_when_the_estimate_drifts_later() -> None:
    # promised +1 h, now computed +2 h (e.g. a node not yet started): backfill stays within 1 h
    queue = [task("low", 1, 2, **GANG), task("short", 2, 5, gpu=4, limit_h=1)]
    queue.append(task("longer", 3, 5, gpu=4, limit_h=1.5))
    d = run(queue, two_busy_workers(), promise=Promise("low", NOW + H))
    assert d.shadow is not None and d.shadow.start == NOW + 2 * H
    assert d.promise == Promise("low", NOW + H)
    assert set(placed(d)) == {"short"}
    assert d.pending["longer"].endswith("start in 2h; a task with a time limit of at most 1h may use it")
    # a promise whose time has passed was broken by something else: it is renewed
    d = run(queue, two_busy_workers(), promise=Promise("low", NOW - 60))
    assert d.promise == Promise("low", NOW + 2 * H) and set(placed(d)) == {"short", "longer"}


def test_without_a_known_start_nothing_is_promised() -> None:
    workers = two_busy_workers()
    workers[1] = worker("w-2", (0, 1, 2, 3, 4, 5), [Release(None, (6, 7))])
    workers[2] = worker("w-3", (0, 1), [Release(None, (2, 3, 4, 5, 6, 7))])
    queue = [task("low", 1, 2, **GANG), task("high", 2, 9, **GANG)]
    d = run(queue, workers, promise=Promise("low", NOW + H))
    assert d.shadow is not None and d.shadow.task_id == "low" and d.shadow.start is None
    assert d.promise is None  # the next decision gives the shadow to the first blocked gang
    plain = run(queue, workers)
    assert plain.shadow is not None and plain.shadow.task_id == "high"


def test_carry() -> None:
    kept = Promise("g", NOW + H)
    assert carry(kept, "g", NOW + 2 * H, NOW) == kept  # never later
    assert carry(kept, "g", NOW + 0.5 * H, NOW) == Promise("g", NOW + 0.5 * H)  # earlier is kept
    assert carry(kept, "other", NOW + 2 * H, NOW) == Promise("other", NOW + 2 * H)
    assert carry(kept, "g", None, NOW) is None and carry(None, None, None, NOW) is None
    assert carry(kept, "g", NOW + 3 * H, NOW + 2 * H) == Promise("g", NOW + 3 * H)  # broken: renewed


# -- the replay -------------------------------------------------------------------------------


def check_kept_decision(
    queue: list[TaskReq],
    workers: list[WorkerFree],
    reservations: list[ReservationHold],
    kw: dict[str, Any],
    d: Decision,
    promise: Promise,
) -> None:
    """Replays a decision made with a promise: the kept owner's hold is taken first, from what
    it may use; then, in order, every placement fits what is left at its turn (plus the hold for
    a task that ends by the promised start), every pending task fits neither; the kept owner is
    placed exactly on its hold, or it does not fit even with it; a shadow given during the walk
    (once the owner started) is taken at its owner's turn; and the reported shadow start is the
    one recomputed after the whole decision."""
    now = kw["now"]
    by_id = {t.id: t for t in queue}
    wmap = {w.id: w for w in workers}
    held = held_by(reservations)
    state = initial_state(workers)
    placements = {p.task_id: p for p in d.assignments}
    assert len(placements) == len(d.assignments)
    assert set(d.pending) == set(by_id) - set(placements)
    for t in queue:
        assert d.reason_for(t) == d.pending.get(t.id)
    owner = by_id.get(promise.task_id)
    if owner is not None and not eligible(owner, workers, held, kw["shadow_single_node"]):
        owner = None
    kept_placed = owner is not None and owner.id in placements
    kept_held = owner is not None and not kept_placed
    if kept_held:
        assert d.shadow is not None and owner is not None and d.shadow.task_id == owner.id
    hold: dict[str, Free] | None = None
    bound: float | None = None  # tasks ending by then may use the hold
    if owner is not None and kept_placed:
        pl = placements[owner.id]
        assert not pl.backfill and [n.rank for n in pl.nodes] == list(range(owner.node_count))
        hold = {n.worker_id: Free(owner.cpu, owner.memory_gb, 1, set(n.gpus)) for n in pl.nodes}
    elif owner is not None and kept_held:
        assert d.shadow is not None
        hold = {sn.worker_id: Free(sn.cpu, sn.memory_gb, sn.slots, set(sn.gpus)) for sn in d.shadow.nodes}
        if d.promise is not None:
            assert d.promise.task_id == owner.id and d.shadow.start is not None
            assert d.promise.start <= d.shadow.start
            bound = d.promise.start
    if owner is not None and hold is not None:
        assert len(hold) == owner.node_count
        for wid, h in hold.items():
            f = state[wid]
            assert h.gpus <= usable_gpus(owner, wid, f, held)
            assert not kept_placed or node_fits(owner, wmap[wid], f, held)
            if h.gpus and owner.gpu_type:
                assert (wmap[wid].gpu_type or "").lower() == owner.gpu_type.lower()
            assert h.cpu <= f.cpu and h.mem <= f.mem and h.slots <= f.slots
            f.cpu, f.mem, f.slots, f.gpus = f.cpu - h.cpu, f.mem - h.mem, f.slots - h.slots, f.gpus - h.gpus
    later = None if kept_held else d.shadow  # a shadow given during the walk
    key = {t.id: order_key(t, now=now, aging_rate=kw["aging_rate"], aging_cap=kw["aging_cap"]) for t in queue}
    for t in sorted(queue, key=lambda t: key[t.id]):
        if owner is not None and t.id == owner.id and hold is not None:
            if kept_placed:
                hold = None  # it starts on what was held for it: the hold is spent
            else:
                pool = {wid: merged(f, hold.get(wid)) for wid, f in state.items()}
                assert sum(node_fits(t, wmap[wid], f, held) for wid, f in pool.items()) < t.node_count
            continue
        may_backfill = (
            hold is not None
            and bound is not None
            and t.time_limit_s is not None
            and now + t.time_limit_s <= bound
        )
        pl = placements.get(t.id)
        if pl is None:
            pool = {
                wid: merged(f, hold.get(wid) if hold and may_backfill else None) for wid, f in state.items()
            }
            fits = sum(node_fits(t, wmap[wid], f, held) for wid, f in pool.items()) >= t.node_count
            assert not fits, f"{t.id} left pending but fits: {d.pending[t.id]}"
        else:
            check_placement(t, pl, wmap, state, hold if may_backfill else None, held)
            assert not pl.backfill or may_backfill, f"{t.id} backfilled but does not end by the promise"
        if later is not None and t.id == later.task_id:
            assert hold is None and pl is None, "a second shadow while the kept one held"
            hold, bound = {}, later.start
            for sn in later.nodes:
                f = state[sn.worker_id]
                assert set(sn.gpus) <= usable_gpus(t, sn.worker_id, f, held)
                f.cpu, f.mem, f.slots, f.gpus = (
                    f.cpu - sn.cpu,
                    f.mem - sn.memory_gb,
                    f.slots - sn.slots,
                    f.gpus - set(sn.gpus),
                )
                hold[sn.worker_id] = Free(sn.cpu, sn.memory_gb, sn.slots, set(sn.gpus))
    if d.shadow is not None:
        start = reference_start(by_id[d.shadow.task_id], workers, reservations, d, by_id, now)
        assert start == d.shadow.start, "something placed in this decision delayed the shadow start"


def eligible(owner: TaskReq, workers: list[WorkerFree], held, shadow_single_node: bool) -> bool:
    """Whether a promised owner keeps the shadow: a gang (or any task with shadow_single_node)
    with enough active workers that could host one of its nodes when empty (GPUs reserved for
    others not counted)."""
    if owner.node_count == 1 and not shadow_single_node:
        return False
    hosts = 0
    for w in workers:
        others = sum(1 for (wid, _), r in held.items() if wid == w.id and not may_use(owner, r))
        if not w.active or (w.batch_total or 0) < 1:
            continue
        if (w.total_cpu or 0) < owner.cpu or (w.total_memory_gb or 0) < owner.memory_gb:
            continue
        if owner.gpu and (
            (owner.gpu_type and (w.gpu_type or "").lower() != owner.gpu_type.lower())
            or (w.total_gpus or 0) - others < owner.gpu
        ):
            continue
        hosts += 1
    return hosts >= owner.node_count


# -- a few decisions in a row -----------------------------------------------------------------


def run_placements(
    workers: list[WorkerFree], d: Decision, by_id: dict[str, TaskReq], now: float
) -> list[WorkerFree]:
    """The workers once the decision's placements run: each node holds its capacity until its
    limit (a release at now + limit; none known without one)."""
    per = {w.id: w for w in workers}
    for p in d.assignments:
        t = by_id[p.task_id]
        at = None if t.time_limit_s is None else now + t.time_limit_s
        for n in p.nodes:
            w = per[n.worker_id]
            per[w.id] = replace(
                w,
                free_cpu=w.free_cpu - t.cpu,
                free_memory_gb=w.free_memory_gb - t.memory_gb,
                free_gpus=tuple(g for g in w.free_gpus if g not in n.gpus),
                batch_available=w.batch_available - 1,
                releases=(*w.releases, Release(at, n.gpus, t.cpu, t.memory_gb, 1)),
            )
    return [per[w.id] for w in workers]


def end_tasks(workers: list[WorkerFree], now: float, rnd: random.Random) -> list[WorkerFree]:
    """Every task past its limit has ended (the runner stops it there); some others end early."""
    out = []
    for w in workers:
        keep, ended = [], []
        for r in w.releases:
            (ended if (r.at is not None and r.at <= now) or rnd.random() < 0.2 else keep).append(r)
        out.append(
            replace(
                w,
                free_cpu=w.free_cpu + sum(r.cpu for r in ended),
                free_memory_gb=w.free_memory_gb + sum(r.memory_gb for r in ended),
                free_gpus=tuple(sorted({*w.free_gpus, *(g for r in ended for g in r.gpus)})),
                batch_available=w.batch_available + sum(r.slots for r in ended),
                releases=tuple(keep),
            )
        )
    return out


@settings(
    max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much]
)
@given(scenario_st(), st.data())
@pytest.mark.slow
def test_a_promise_is_never_pushed_later_by_later_arrivals(scenario, data: st.DataObject) -> None:
    queue, workers, reservations, kw = scenario
    d = decide(queue, workers, reservations, **kw)
    assume(d.promise is not None)
    rnd = data.draw(st.randoms(use_true_random=False))
    now, seq = kw["now"], len(queue)
    for _ in range(4):
        promise = d.promise
        by_id = {t.id: t for t in queue}
        workers = run_placements(workers, d, by_id, now)
        queue = [t for t in queue if t.id not in {p.task_id for p in d.assignments}]
        now += data.draw(st.sampled_from([0.0, 0.0, 0.25, 0.5, 1.0, 2.0])) * H
        workers = end_tasks(workers, now, rnd)
        for _ in range(data.draw(st.integers(0, 4))):  # arrivals: any priority, any size
            queue.append(replace(data.draw(task_st(seq)), created_at=now))
            seq += 1
        kw = {**kw, "now": now}
        d = decide(queue, workers, reservations, **kw, promise=promise)
        if promise is None:
            continue
        check_kept_decision(queue, workers, reservations, kw, d, promise)
        if any(p.backfill for p in d.assignments):
            event("a task backfilled the kept hold")
        if promise.task_id in {p.task_id for p in d.assignments}:
            event("the promised owner started")
            continue
        event("the promised owner still waits")
        # still queued: its promise held, and it has not come due (all it waits for is back by then)
        assert now < promise.start, "the promised start came and the owner did not start"
        assert d.shadow is not None and d.shadow.task_id == promise.task_id
        assert d.shadow.start is not None and d.shadow.start <= promise.start
        assert d.promise is not None and d.promise.start == d.shadow.start


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(scenario_st(), st.data())
@pytest.mark.slow
def test_any_promise_gives_a_valid_decision(scenario, data: st.DataObject) -> None:
    """Whatever is passed in (a stale owner, any start, a task that is not queued), the decision
    replays, is the same in any queue order, and without an eligible owner is the plain one."""
    queue, workers, reservations, kw = scenario
    owner = data.draw(st.sampled_from([*(t.id for t in queue), "gone"]))
    promise = Promise(owner, kw["now"] + data.draw(st.sampled_from([-1.0, 0.0, 0.5, 1.0, 3.0])) * H)
    d = decide(queue, workers, reservations, **kw, promise=promise)
    check_kept_decision(queue, workers, reservations, kw, d, promise)
    again = queue[:]
    data.draw(st.randoms(use_true_random=False)).shuffle(again)
    d2 = decide(again, workers, reservations, **kw, promise=promise)
    assert (d2.assignments, d2.pending, d2.shadow, d2.promise) == (
        d.assignments,
        d.pending,
        d.shadow,
        d.promise,
    )
    by_id = {t.id: t for t in queue}
    if owner not in by_id or not eligible(
        by_id[owner], workers, held_by(reservations), kw["shadow_single_node"]
    ):
        plain = decide(queue, workers, reservations, **kw)
        assert (d.assignments, d.pending, d.shadow) == (plain.assignments, plain.pending, plain.shadow)
