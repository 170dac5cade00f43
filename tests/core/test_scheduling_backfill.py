"""Backfill (fetchml.core.scheduling.shadow): time limits, releases, shadow start.

A blocked gang (or single task, with shadow_single_node) gets a shadow hold and a *shadow
start*: the earliest time its needs are met on the candidate workers, from what is free now
plus what running tasks free at their start + time limit. A later task may use the held
capacity only if it carries a time limit that ends by then. Properties checked over random
clusters with running tasks, by replaying each decision:

- every placement fits what is left at its turn; one that backfills (``Placement.backfill``)
  may take held capacity and must end by the shadow start; no other task (in particular no
  task without a limit) touches held capacity; every pending task does not fit at its turn;
- the shadow start, recomputed from the final state (every placement made, each backfilled
  task running its full limit), is exactly the one the decision reported: backfill never
  delays the owner (nor does anything else placed after it).
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import replace
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fetchml.core.scheduling import (
    REASON_SHADOW,
    Decision,
    Placement,
    Release,
    ReservationHold,
    TaskReq,
    WorkerFree,
    decide,
    order_key,
)
from fetchml.core.scheduling.explain import fmt_duration
from fetchml.core.scheduling.shadow import ready_at
from tests.core.test_scheduling_properties import (
    Free,
    held_by,
    initial_state,
    may_use,
    node_fits,
    usable_gpus,
)

NOW = 1_750_000_000.0
H = 3600.0


def worker(
    wid: str,
    gpus: tuple[int, ...],
    releases: Sequence[Release] = (),
    *,
    total_gpus: int = 8,
    gpu_type: str | None = None,
    slots: int = 8,
    active: bool = True,
) -> WorkerFree:
    return WorkerFree(
        id=wid,
        free_cpu=64,
        free_memory_gb=256,
        free_gpus=gpus,
        gpu_type=gpu_type,
        batch_available=slots,
        active=active,
        total_cpu=64,
        total_memory_gb=256,
        total_gpus=total_gpus,
        batch_total=8,
        releases=tuple(releases),
    )


def task(tid: str, seq: int, priority: int = 5, *, limit_h: float | None = None, **kw: Any) -> TaskReq:
    return TaskReq(
        id=tid,
        seq=seq,
        priority=priority,
        created_at=NOW,
        time_limit_s=None if limit_h is None else limit_h * H,
        **kw,
    )


def run(
    queue: list[TaskReq], workers: list[WorkerFree], reservations: Sequence[ReservationHold] = (), **kw: Any
):
    return decide(queue, workers, list(reservations), now=NOW, **kw)


def placed(d: Decision) -> dict[str, tuple[str, ...]]:
    return {p.task_id: tuple(n.worker_id for n in p.nodes) for p in d.assignments}


def two_busy_workers() -> list[WorkerFree]:
    """w-1 frees 4 GPUs in 1 h, w-2 frees 2 GPUs in 2 h, w-3 is busy with no known end."""
    return [
        worker("w-1", (0, 1, 2, 3), [Release(NOW + 1 * H, (4, 5, 6, 7))]),
        worker("w-2", (0, 1, 2, 3, 4, 5), [Release(NOW + 2 * H, (6, 7))]),
        worker("w-3", (0, 1), [Release(None, (2, 3, 4, 5, 6, 7))]),
    ]


# -- examples --------------------------------------------------------------------------------


def test_the_shadow_start_is_when_the_last_needed_worker_frees_up() -> None:
    d = run([task("gang", 1, 9, gpu=8, node_count=2)], two_busy_workers())
    assert d.shadow is not None and d.shadow.task_id == "gang"
    assert [n.worker_id for n in d.shadow.nodes] == ["w-1", "w-2"]
    assert d.shadow.start == NOW + 2 * H
    assert d.pending["gang"] == (
        "waiting for 2 nodes; 0 fit now; capacity on w-1, w-2 is held for it; expected to start in 2h"
    )


def test_a_task_that_ends_before_the_shadow_start_backfills_held_capacity() -> None:
    queue = [
        task("gang", 1, 9, gpu=8, node_count=2),
        task("short", 2, limit_h=1.5, gpu=4),  # ends at +1.5 h <= +2 h
        task("long", 3, limit_h=3, gpu=4),  # would end after the gang's start
        task("none", 4, gpu=4),  # no limit: never backfills
        task("exact", 5, limit_h=2, gpu=4),  # ends exactly at the start: allowed
    ]
    d = run(queue, two_busy_workers())
    by_task = {p.task_id: p for p in d.assignments}
    assert set(by_task) == {"short", "exact"}
    assert by_task["short"].backfill and by_task["short"].nodes[0].worker_id == "w-1"
    assert by_task["exact"].backfill and by_task["exact"].nodes[0].worker_id == "w-2"
    reason = d.pending["long"]
    assert reason.startswith(f"{REASON_SHADOW} gang")
    assert reason.endswith("expected to start in 2h; a task with a time limit of at most 2h may use it")
    assert d.pending["none"] == reason  # reasons are per shape; the text says what would help


def test_no_known_end_means_no_start_and_no_backfill() -> None:
    workers = two_busy_workers()
    workers[1] = worker("w-2", (0, 1, 2, 3, 4, 5), [Release(None, (6, 7))])
    workers[2] = worker("w-3", (0, 1), [Release(None, (2, 3, 4, 5, 6, 7))])
    d = run([task("gang", 1, 9, gpu=8, node_count=2), task("short", 2, limit_h=0.1, gpu=4)], workers)
    assert d.shadow is not None and d.shadow.start is None
    assert d.assignments == []
    assert d.pending["short"] == f"{REASON_SHADOW} gang"  # as before time limits existed
    assert d.pending["gang"].endswith("is held for it")


def test_without_releases_the_shadow_and_reasons_are_as_before() -> None:
    queue = [task("gang", 1, 9, gpu=8, node_count=2), task("small", 2, limit_h=0.5, gpu=4)]
    workers = [worker("w-1", (0, 1, 2, 3)), worker("w-2", (0, 1, 2, 3, 4, 5)), worker("w-3", ())]
    d = run(queue, workers)
    assert d.shadow is not None and d.shadow.start is None
    assert [n.worker_id for n in d.shadow.nodes] == ["w-2", "w-1"]  # least missing first
    assert d.pending == {
        "gang": "waiting for 2 nodes; 0 fit now; capacity on w-2, w-1 is held for it",
        "small": f"{REASON_SHADOW} gang",
    }


def test_the_shadow_goes_to_the_workers_that_free_up_first() -> None:
    # w-1 misses 2 GPUs but they have no known end; w-2 misses 6 that come back in 1 h
    workers = [
        worker("w-1", (0, 1, 2, 3, 4, 5), [Release(None, (6, 7))]),
        worker("w-2", (0, 1), [Release(NOW + H, (2, 3, 4, 5, 6, 7))]),
    ]
    d = run([task("eight", 1, 9, gpu=8)], workers, shadow_single_node=True)
    assert d.shadow is not None and [n.worker_id for n in d.shadow.nodes] == ["w-2"]
    assert d.shadow.start == NOW + H


def test_releases_of_tasks_placed_in_the_same_decision_count() -> None:
    # "first" (ahead of the gang) takes w-1's free GPUs for 1 h: the gang can start then
    workers = [worker("w-1", tuple(range(8))), worker("w-2", tuple(range(8)), slots=0)]
    workers[1] = worker("w-2", (), [Release(NOW + 0.5 * H, tuple(range(8)))])
    queue = [task("first", 1, 9, limit_h=1, gpu=8), task("gang", 2, 8, gpu=8, node_count=2)]
    d = run(queue, workers)
    assert placed(d) == {"first": ("w-1",)}
    assert d.shadow is not None and d.shadow.start == NOW + H
    # without a limit, w-1 never frees up for planning
    d = run([task("first", 1, 9, gpu=8), queue[1]], workers)
    assert d.shadow is not None and d.shadow.start is None


def test_a_release_already_due_counts_as_now() -> None:
    workers = [worker("w-1", (0, 1, 2, 3), [Release(NOW - H, (4, 5, 6, 7))]), worker("w-2", (0, 1, 2, 3))]
    d = run([task("gang", 1, 9, gpu=8, node_count=2)], workers)
    assert d.shadow is not None and d.shadow.start is None  # w-2 has no release at all
    workers[1] = worker("w-2", (0, 1, 2, 3), [Release(NOW + 60, (4, 5, 6, 7))])
    d = run([task("gang", 1, 9, gpu=8, node_count=2)], workers)
    assert d.shadow is not None and d.shadow.start == NOW + 60


def test_cpu_memory_and_slots_are_planned_too() -> None:
    w1 = WorkerFree(
        id="w-1",
        free_cpu=4,
        free_memory_gb=16,
        free_gpus=(),
        batch_available=0,
        total_cpu=16,
        total_memory_gb=64,
        total_gpus=0,
        batch_total=2,
        releases=(Release(NOW + H, (), 8, 16, 1), Release(NOW + 3 * H, (), 4, 32, 1)),
    )
    d = run(
        [task("big", 1, 9, cpu=12, memory_gb=60), task("cpu", 2, limit_h=1, cpu=1)],
        [w1],
        shadow_single_node=True,
    )
    assert d.shadow is not None and d.shadow.start == NOW + 3 * H
    # the only slot comes back in 1 h: nothing can run now, not even a short task
    assert d.assignments == []


def test_backfilled_gang_nodes_and_reservations() -> None:
    # r-1 holds w-1's GPUs 0-1 for alice; the shadow owner (alice's, carrying r-1) holds them
    workers = [
        worker("w-1", (0, 1, 2, 3), [Release(NOW + 2 * H, (4, 5, 6, 7))]),
        worker("w-2", (0, 1, 2, 3), [Release(NOW + 2 * H, (4, 5, 6, 7))]),
        worker("w-3", (0, 1, 2, 3)),
    ]
    res = [ReservationHold(id="r-1", user_id="alice", gpus={"w-1": (0, 1)})]
    queue = [
        task("gang", 1, 9, gpu=8, node_count=2, reservation_id="r-1", user_id="alice"),
        task("bob", 2, limit_h=1, gpu=4, node_count=2),  # may not use r-1's GPUs
        task("alice", 3, limit_h=1, gpu=2, reservation_id="r-1", user_id="alice"),
    ]
    d = run(queue, workers, res)
    assert d.shadow is not None and d.shadow.start == NOW + 2 * H
    got = {p.task_id: p for p in d.assignments}
    # bob's 2-node gang: one node on w-2's held GPUs, one on w-3 (free); not on w-1 (reserved)
    assert sorted(n.worker_id for n in got["bob"].nodes) == ["w-2", "w-3"] and got["bob"].backfill
    assert got["alice"].nodes[0].gpus == (0, 1) and got["alice"].reservation_id == "r-1"
    assert got["alice"].backfill


def test_released_gpus_reserved_for_others_do_not_count() -> None:
    # GPUs 6-7 come back in 1 h but r-1 holds them for alice; 4-5 come back in 3 h
    workers = [worker("w-1", (0, 1, 2, 3), [Release(NOW + H, (6, 7)), Release(NOW + 3 * H, (4, 5))])]
    res = [ReservationHold(id="r-1", user_id="alice", gpus={"w-1": (6, 7)})]
    d = run([task("bob", 1, 9, gpu=6)], workers, res, shadow_single_node=True)
    assert d.shadow is not None and d.shadow.start == NOW + 3 * H
    alices = task("alice", 1, 9, gpu=6, reservation_id="r-1", user_id="alice")
    d = run([alices], workers, res, shadow_single_node=True)
    assert d.shadow is not None and d.shadow.start == NOW + H


def test_free_capacity_comes_before_held_capacity() -> None:
    # held capacity is used only for what free capacity cannot give: each held GPU used may
    # delay the gang's real start (running tasks usually end before their limits)
    workers = [*two_busy_workers(), worker("w-4", (0, 1, 2, 3))]
    queue = [task("gang", 1, 9, gpu=8, node_count=2), task("short", 2, limit_h=1, gpu=4)]
    d = run(queue, workers)
    assert placed(d) == {"short": ("w-4",)} and not d.assignments[0].backfill
    # on a held worker, its free GPUs beyond the hold go first, the held ones make up the rest
    workers = [
        worker("w-1", (0, 1, 2, 3, 4, 5), [Release(NOW + H, (6, 7))]),
        worker("w-2", (0, 1), [Release(NOW + H, (2, 3, 4, 5, 6, 7))]),
    ]
    queue = [task("gang", 1, 9, gpu=4, node_count=2), task("short", 2, limit_h=0.5, gpu=4)]
    d = run(queue, workers)
    assert d.shadow is not None and d.shadow.nodes[0].gpus == (0, 1, 2, 3)  # w-1's 4 and 5 are not held
    assert placed(d) == {"short": ("w-1",)} and d.assignments[0].backfill
    assert {4, 5} <= set(d.assignments[0].nodes[0].gpus)


def test_prefer_comes_first_among_held_workers() -> None:
    queue = [task("gang", 1, 9, gpu=8, node_count=2), task("short", 2, limit_h=1, gpu=4)]
    assert placed(run(queue, two_busy_workers())) == {"short": ("w-1",)}  # shadow order
    assert placed(run(queue, two_busy_workers(), prefer="w-2")) == {"short": ("w-2",)}


def test_the_walk_goes_on_when_only_held_capacity_is_left() -> None:
    # every free slot is held for the gang; 600 tasks that cannot backfill, then one that can
    workers = [
        worker("w-1", (0, 1, 2, 3), [Release(NOW + 2 * H, (4, 5, 6, 7))], slots=1),
        worker("w-2", (0, 1, 2, 3), [Release(NOW + 2 * H, (4, 5, 6, 7))], slots=1),
    ]
    queue = [task("gang", 0, 9, gpu=8, node_count=2)]
    queue += [task(f"t{i}", i, gpu=1) for i in range(1, 601)]
    queue += [task("late", 601, limit_h=1, gpu=1), task("later", 602, limit_h=1, gpu=1)]
    d = run(queue, workers)
    assert placed(d) == {"late": ("w-1",), "later": ("w-2",)}
    assert d.pending["t1"].startswith(REASON_SHADOW)
    # and it stops as soon as nothing can backfill any more
    d = run(queue[:-2], workers)
    assert d.assignments == [] and d.scanned < len(queue) - 2


def test_once_only_held_capacity_is_left_the_rest_backfills_in_order_and_once() -> None:
    # equal priorities, no aging: the order is seq alone. a, b and c backfill during the walk;
    # c takes the last free slot, so only held capacity is left: d (after c) is placed by the
    # one pass over the queue that follows, and nothing before it a second time.
    workers = [
        worker("w-1", (0, 1, 2, 3), [Release(NOW + 2 * H, (4, 5, 6, 7))], slots=2),
        worker("w-2", (0, 1, 2, 3), [Release(NOW + 2 * H, (4, 5, 6, 7))], slots=2),
    ]
    queue = [task("gang", 0, gpu=8, node_count=2)]
    queue += [task(x, i, limit_h=1, gpu=1) for i, x in enumerate("abcde", start=1)]
    queue += [task("f", 6, gpu=1)]
    d = run(queue, workers, aging_rate=0.0)
    assert [(p.task_id, p.nodes[0].worker_id) for p in d.assignments] == [
        ("a", "w-1"),
        ("b", "w-1"),
        ("c", "w-2"),
        ("d", "w-2"),
    ]
    assert all(p.backfill for p in d.assignments)
    assert d.pending["e"] == d.pending["f"]  # one reason per shape


def test_a_time_limit_must_be_positive() -> None:
    with pytest.raises(ValueError, match="time_limit_s"):
        task("t", 1, limit_h=0)
    assert task("t", 1, limit_h=None).time_limit_s is None


def test_ready_at_and_durations() -> None:
    assert ready_at(NOW, (0, 0, 0, 0), []) == NOW
    assert ready_at(NOW, (2, 0, 0, 0), [(NOW + 5, 1, 0, 0, 1), (NOW + 9, 1, 0, 0, 1)]) == NOW + 9
    assert ready_at(NOW, (2, 0, 0, 0), [(NOW + 5, 1, 0, 0, 1)]) is None
    assert ready_at(NOW, (1, 0, 0, 0), [(NOW - 5, 1, 0, 0, 1)]) == NOW
    assert [fmt_duration(s) for s in (5, 60, 3599, 3600, 3660, 86400 + 7200, 86400)] == [
        "under a minute",
        "1m",
        "59m",
        "1h",
        "1h 1m",
        "1d 2h",
        "1d",
    ]


# -- properties ------------------------------------------------------------------------------

TYPES = [None, "A", "B"]
USERS = ["alice", "bob"]
AT_HOURS = [-0.5, 0.0, 0.25, 0.5, 1.0, 1.0, 2.0, 3.0, 6.0]
LIMIT_HOURS = [None, None, 0.25, 0.5, 1.0, 2.0, 3.0, 8.0]


@st.composite
def busy_workers_st(draw: st.DrawFn) -> list[WorkerFree]:
    """Workers with running tasks: free = totals minus them; each releases what it holds."""
    out = []
    for i in range(draw(st.integers(1, 5))):
        total_gpus = draw(st.sampled_from([0, 2, 4, 8]))
        total_cpu = draw(st.sampled_from([8, 16, 32]))
        total_mem = draw(st.sampled_from([16, 32, 64]))
        batch_total = draw(st.integers(1, 4))
        gpus, cpu, mem = list(range(total_gpus)), total_cpu, total_mem
        releases = []
        for _ in range(draw(st.integers(0, batch_total))):
            k = draw(st.integers(0, len(gpus)))
            taken = sorted(draw(st.permutations(gpus))[:k]) if gpus else []
            gpus = [g for g in gpus if g not in taken]
            c, m = draw(st.integers(0, cpu)), draw(st.integers(0, mem))
            cpu, mem = cpu - c, mem - m
            h = draw(st.sampled_from([None, *AT_HOURS]))
            releases.append(Release(None if h is None else NOW + h * H, tuple(taken), c, m, 1))
        out.append(
            WorkerFree(
                id=f"w{i}",
                free_cpu=cpu,
                free_memory_gb=mem,
                free_gpus=tuple(gpus),
                gpu_type=draw(st.sampled_from(TYPES)),
                batch_available=batch_total - len(releases),
                active=draw(st.sampled_from([True, True, True, True, False])),
                total_cpu=total_cpu,
                total_memory_gb=total_mem,
                total_gpus=total_gpus,
                batch_total=batch_total,
                releases=tuple(releases),
            )
        )
    return out


@st.composite
def reservations_st(draw: st.DrawFn, workers: list[WorkerFree]) -> list[ReservationHold]:
    out = []
    for j in range(draw(st.integers(0, 1))):
        gpus: dict[str, tuple[int, ...]] = {}
        for w in workers:
            if w.total_gpus and draw(st.booleans()):
                idx = draw(st.lists(st.integers(0, w.total_gpus - 1), min_size=1, max_size=3, unique=True))
                gpus[w.id] = tuple(sorted(idx))
        out.append(ReservationHold(id=f"r{j}", user_id=draw(st.sampled_from(USERS)), gpus=gpus))
    return out


def task_st(seq: int) -> st.SearchStrategy[TaskReq]:
    return st.builds(
        TaskReq,
        id=st.just(f"t{seq}"),
        seq=st.just(seq),
        priority=st.integers(1, 10),
        created_at=st.floats(0.0, 6.0).map(lambda h: NOW - h * H),
        cpu=st.sampled_from([0, 1, 2, 4, 8]),
        memory_gb=st.sampled_from([0, 4, 8, 16]),
        gpu=st.sampled_from([0, 1, 1, 2, 4, 8]),
        gpu_type=st.sampled_from([None, None, None, "A"]),
        node_count=st.sampled_from([1, 1, 1, 2, 3]),
        reservation_id=st.sampled_from([None, None, None, "r0"]),
        user_id=st.sampled_from(USERS),
        is_admin=st.sampled_from([False, False, False, True]),
        time_limit_s=st.sampled_from(LIMIT_HOURS).map(lambda h: None if h is None else h * H),
    )


@st.composite
def scenario_st(draw: st.DrawFn) -> tuple[list[TaskReq], list[WorkerFree], list[ReservationHold], dict]:
    workers = draw(busy_workers_st())
    reservations = draw(reservations_st(workers))
    n = draw(st.integers(1, 20))
    seqs = draw(st.permutations(list(range(n))))
    queue = [draw(task_st(s)) for s in seqs]
    kw = {
        "now": NOW,
        "aging_rate": draw(st.sampled_from([0.0, 1.0])),
        "aging_cap": 15.0,
        "shadow_single_node": draw(st.booleans()),
        "prefer": draw(st.none() | st.sampled_from([w.id for w in workers])),
    }
    return queue, workers, reservations, kw


def merged(f: Free, h: Free | None) -> Free:
    if h is None:
        return f
    return Free(f.cpu + h.cpu, f.mem + h.mem, f.slots + h.slots, f.gpus | h.gpus)


def check_backfill_decision(
    queue: list[TaskReq],
    workers: list[WorkerFree],
    reservations: list[ReservationHold],
    kw: dict,
    d: Decision,
) -> None:
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
    shadow = d.shadow
    start = shadow.start if shadow is not None else None
    if shadow is not None:
        owner_reason = d.pending[shadow.task_id]
        assert "is held for it" in owner_reason
        assert ("expected to start in" in owner_reason) == (start is not None)
        assert start is None or start >= now
    key = {t.id: order_key(t, now=now, aging_rate=kw["aging_rate"], aging_cap=kw["aging_cap"]) for t in queue}

    hold: dict[str, Free] | None = None  # set once the walk passes the shadow's owner
    for t in sorted(queue, key=lambda t: key[t.id]):
        may_backfill = (
            hold is not None
            and start is not None
            and t.time_limit_s is not None
            and now + t.time_limit_s <= start
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
            assert not pl.backfill or may_backfill, f"{t.id} backfilled but does not end by the shadow start"
        if shadow is not None and t.id == shadow.task_id:
            assert pl is None
            hold = {}
            for sn in shadow.nodes:
                f = state[sn.worker_id]
                assert set(sn.gpus) <= usable_gpus(t, sn.worker_id, f, held)
                assert sn.cpu <= f.cpu and sn.memory_gb <= f.mem and sn.slots <= f.slots
                f.cpu, f.mem, f.slots, f.gpus = (
                    f.cpu - sn.cpu,
                    f.mem - sn.memory_gb,
                    f.slots - sn.slots,
                    f.gpus - set(sn.gpus),
                )
                hold[sn.worker_id] = Free(sn.cpu, sn.memory_gb, sn.slots, set(sn.gpus))
    if shadow is not None:
        owner = by_id[shadow.task_id]
        assert reference_start(owner, workers, reservations, d, by_id, now) == start


def check_placement(t: TaskReq, pl: Placement, wmap, state, hold, held) -> None:
    """The placement fits at its turn: free capacity, plus (only for a task that may backfill)
    the held capacity, which it takes only what free capacity lacks of. Placement.backfill
    says whether it took any."""
    assert [n.rank for n in pl.nodes] == list(range(t.node_count))
    assert len({n.worker_id for n in pl.nodes}) == t.node_count
    used_hold = False
    for n in pl.nodes:
        f = state[n.worker_id]
        h = hold.get(n.worker_id) if hold is not None else None
        pool = merged(f, h)
        assert node_fits(t, wmap[n.worker_id], pool, held), f"{t.id} placed where it does not fit"
        assert len(n.gpus) == len(set(n.gpus)) == t.gpu
        assert set(n.gpus) <= usable_gpus(t, n.worker_id, pool, held), "GPU busy, taken, reserved or held"
        c = m = s = 0  # what comes out of the hold: only what free capacity lacks
        g: set[int] = set()
        if h is not None:
            c, m, s = (
                t.cpu - min(f.cpu, t.cpu),
                t.memory_gb - min(f.mem, t.memory_gb),
                1 - min(max(f.slots, 0), 1),
            )
            g = set(n.gpus) & h.gpus
            h.cpu, h.mem, h.slots, h.gpus = h.cpu - c, h.mem - m, h.slots - s, h.gpus - g
            assert min(h.cpu, h.mem, h.slots) >= 0
            used_hold = used_hold or bool(c or m or s or g)
        f.cpu -= t.cpu - c
        f.mem -= t.memory_gb - m
        f.slots -= 1 - s
        f.gpus -= set(n.gpus) - g
    assert pl.backfill == used_hold


def reference_start(
    owner: TaskReq,
    workers: list[WorkerFree],
    reservations: list[ReservationHold],
    d: Decision,
    by_id: dict[str, TaskReq],
    now: float,
) -> float | None:
    """The owner's shadow start on the state after the whole decision: every placement made,
    each one with a time limit (backfilled or not) freeing its capacity at now + limit."""
    held = held_by(reservations)
    state = initial_state(workers)
    rels: dict[str, list[tuple[float, set[int], int, int, int]]] = {w.id: [] for w in workers}
    for w in workers:
        rels[w.id] += [
            (r.at, set(r.gpus), r.cpu, r.memory_gb, r.slots) for r in w.releases if r.at is not None
        ]
    for p in d.assignments:
        t = by_id[p.task_id]
        for n in p.nodes:
            f = state[n.worker_id]
            f.cpu, f.mem, f.slots, f.gpus = (
                f.cpu - t.cpu,
                f.mem - t.memory_gb,
                f.slots - 1,
                f.gpus - set(n.gpus),
            )
            if t.time_limit_s is not None:
                rels[n.worker_id].append((now + t.time_limit_s, set(n.gpus), t.cpu, t.memory_gb, 1))

    def usable(wid: str, gpus: set[int]) -> int:
        return sum(1 for g in gpus if (wid, g) not in held or may_use(owner, held[(wid, g)]))

    times = []
    for w in workers:
        if not w.active:
            continue
        if owner.gpu and owner.gpu_type and (w.gpu_type or "").lower() != owner.gpu_type.lower():
            continue
        f = state[w.id]
        g, c, m, s = owner.gpu - usable(w.id, f.gpus), owner.cpu - f.cpu, owner.memory_gb - f.mem, 1 - f.slots
        ready = now if max(g, c, m, s) <= 0 else None
        for at, rg, rc, rm, rs in sorted(rels[w.id], key=lambda r: r[0]):
            if ready is not None:
                break
            g, c, m, s = g - usable(w.id, rg), c - rc, m - rm, s - rs
            if max(g, c, m, s) <= 0:
                ready = max(at, now)
        if ready is not None:
            times.append(ready)
    times.sort()
    return times[owner.node_count - 1] if len(times) >= owner.node_count else None


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(scenario_st(), st.randoms(use_true_random=False))
@pytest.mark.slow
def test_backfill_decisions_replay_exactly(scenario, rnd: random.Random) -> None:
    queue, workers, reservations, kw = scenario
    d = decide(queue, workers, reservations, **kw)
    check_backfill_decision(queue, workers, reservations, kw, d)
    again = queue[:]
    rnd.shuffle(again)
    d2 = decide(again, workers, reservations, **kw)
    assert d2.assignments == d.assignments and d2.pending == d.pending and d2.shadow == d.shadow


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(scenario_st())
def test_tasks_without_a_limit_never_touch_held_capacity(scenario) -> None:
    """Strip every limit: nothing backfills, and the decision is the one without backfill."""
    queue, workers, reservations, kw = scenario
    plain = [replace(t, time_limit_s=None) for t in queue]
    d = decide(plain, workers, reservations, **kw)
    assert not any(p.backfill for p in d.assignments)
    check_backfill_decision(plain, workers, reservations, kw, d)
    # what tasks with limits add is only backfill: everything placed without them still is
    with_limits = decide(queue, workers, reservations, **kw)
    assert with_limits.shadow is None or d.shadow is not None
    no_limit_ids = {t.id for t in queue if t.time_limit_s is None}
    for p in with_limits.assignments:
        if p.task_id in no_limit_ids:
            assert not p.backfill
