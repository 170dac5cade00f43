"""Properties of decide() over random queues, clusters and reservations.

The main check replays the decision: walking the queue in decision order (aged priority desc,
then seq) from the free capacity passed in, every placement must fit what is left at its turn
(exact GPU indices, reservation rules, cpu/memory/slots, distinct workers for a gang) and every
task left pending must NOT fit what is left at its turn. That one replay implies: no GPU is
given twice, no worker is overcommitted, reserved GPUs go only to their owner's tasks carrying
the id, and no task is placed while a task ahead of it in the order could have run on the
capacity that task was given (the ahead task had first pick and did not fit).
"""

from __future__ import annotations

import random
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fetchml.core.scheduling import (
    REASON_NEVER,
    REASON_NO_WORKERS,
    REASON_PRIORITY,
    REASON_RESERVATION,
    REASON_SHADOW,
    Decision,
    ReservationHold,
    ShadowNode,
    TaskReq,
    WorkerFree,
    decide,
    order_key,
)

NOW = 1_750_000_000.0
TYPES = [None, "A", "B"]
USERS = ["alice", "bob"]


@st.composite
def workers_st(draw: st.DrawFn) -> list[WorkerFree]:
    out = []
    for i in range(draw(st.integers(1, 6))):
        total_gpus = draw(st.sampled_from([0, 2, 4, 8]))
        busy = draw(st.sets(st.integers(0, 7), max_size=total_gpus)) if total_gpus else set()
        total_cpu = draw(st.sampled_from([8, 16, 32]))
        total_mem = draw(st.sampled_from([16, 32, 64]))
        batch_total = draw(st.integers(1, 4))
        out.append(
            WorkerFree(
                id=f"w{i}",
                free_cpu=total_cpu - draw(st.integers(0, total_cpu // 2)),
                free_memory_gb=total_mem - draw(st.integers(0, total_mem // 2)),
                free_gpus=tuple(g for g in range(total_gpus) if g not in busy),
                gpu_type=draw(st.sampled_from(TYPES)),
                batch_available=batch_total - draw(st.integers(0, batch_total)),
                active=draw(st.sampled_from([True, True, True, True, False])),
                total_cpu=total_cpu,
                total_memory_gb=total_mem,
                total_gpus=total_gpus,
                batch_total=batch_total,
            )
        )
    return out


@st.composite
def reservations_st(draw: st.DrawFn, workers: list[WorkerFree]) -> list[ReservationHold]:
    out = []
    for j in range(draw(st.integers(0, 2))):
        gpus: dict[str, tuple[int, ...]] = {}
        for w in workers:
            if w.total_gpus and draw(st.booleans()):
                # mostly GPUs that are free now (those are the ones that matter), some busy ones
                mostly_free = draw(st.integers(0, 3)) > 0
                pool = list(w.free_gpus) if w.free_gpus and mostly_free else list(range(w.total_gpus))
                idx = draw(st.lists(st.sampled_from(pool), min_size=1, max_size=4, unique=True))
                gpus[w.id] = tuple(sorted(idx))
        out.append(ReservationHold(id=f"r{j}", user_id=draw(st.sampled_from(USERS)), gpus=gpus))
    return out


def task_st(seq: int) -> st.SearchStrategy[TaskReq]:
    return st.builds(
        TaskReq,
        id=st.just(f"t{seq}"),
        seq=st.just(seq),
        priority=st.integers(1, 10),
        created_at=st.floats(-2.0, 30.0).map(lambda h: NOW - h * 3600.0),
        cpu=st.sampled_from([0, 1, 2, 4, 8, 20]),
        memory_gb=st.sampled_from([0, 4, 8, 16, 40]),
        gpu=st.sampled_from([0, 0, 1, 1, 2, 3, 4, 8]),
        gpu_type=st.sampled_from([None, None, "A", "b"]),
        node_count=st.sampled_from([1, 1, 1, 2, 3]),
        reservation_id=st.sampled_from([None, None, "r0", "r1", "r9"]),
        user_id=st.sampled_from(USERS),
        is_admin=st.sampled_from([False, False, False, True]),
    )


@st.composite
def queue_st(draw: st.DrawFn, max_tasks: int = 25) -> list[TaskReq]:
    n = draw(st.integers(0, max_tasks))
    seqs = draw(st.permutations(list(range(n))))
    return [draw(task_st(s)) for s in seqs]


@st.composite
def scenario_st(draw: st.DrawFn) -> tuple[list[TaskReq], list[WorkerFree], list[ReservationHold], dict]:
    workers = draw(workers_st())
    reservations = draw(reservations_st(workers))
    queue = draw(queue_st())
    kw = {
        "now": NOW,
        "aging_rate": draw(st.sampled_from([0.0, 0.5, 1.0, 5.0])),
        "aging_cap": draw(st.sampled_from([10.0, 12.0, 15.0, 100.0])),
        "shadow_single_node": draw(st.booleans()),
        # the server's claims prefer the asking worker; the invariants must not care
        "prefer": draw(st.none() | st.sampled_from([w.id for w in workers])) if workers else None,
    }
    return queue, workers, reservations, kw


# -- the reference replay ---------------------------------------------------------------------


@dataclass
class Free:
    cpu: int
    mem: int
    slots: int
    gpus: set[int]


def held_by(reservations: Sequence[ReservationHold]) -> dict[tuple[str, int], ReservationHold]:
    held: dict[tuple[str, int], ReservationHold] = {}
    for r in reservations:
        for wid, idxs in r.gpus.items():
            for g in idxs:
                held.setdefault((wid, g), r)
    return held


def may_use(t: TaskReq, r: ReservationHold) -> bool:
    return t.reservation_id == r.id and (t.user_id == r.user_id or t.is_admin)


def usable_gpus(t: TaskReq, wid: str, free: Free, held: dict[tuple[str, int], ReservationHold]) -> set[int]:
    return {g for g in free.gpus if (wid, g) not in held or may_use(t, held[(wid, g)])}


def node_fits(t: TaskReq, w: WorkerFree, free: Free, held: dict[tuple[str, int], ReservationHold]) -> bool:
    if free.slots < 1 or free.cpu < t.cpu or free.mem < t.memory_gb:
        return False
    if t.gpu:
        if t.gpu_type and (w.gpu_type or "").lower() != t.gpu_type.lower():
            return False
        if len(usable_gpus(t, w.id, free, held)) < t.gpu:
            return False
    return True


def fits(t: TaskReq, workers: dict[str, WorkerFree], state: dict[str, Free], held) -> bool:
    return sum(node_fits(t, workers[wid], f, held) for wid, f in state.items()) >= t.node_count


def check_decision(
    queue: list[TaskReq],
    workers: list[WorkerFree],
    reservations: list[ReservationHold],
    kw: dict,
    d: Decision,
) -> None:
    by_id = {t.id: t for t in queue}
    wmap = {w.id: w for w in workers}
    held = held_by(reservations)
    state = {
        w.id: Free(w.free_cpu, w.free_memory_gb, w.batch_available, set(w.free_gpus))
        for w in workers
        if w.active
    }
    placements = {p.task_id: p for p in d.assignments}
    assert len(placements) == len(d.assignments), "a task placed twice"
    pending = d.pending
    assert set(pending) == set(by_id) - set(placements), "every task is placed xor pending"
    assert all(isinstance(r, str) and r for r in pending.values()), "every pending task has a reason"
    for t in queue:
        assert d.reason_for(t) == pending.get(t.id)

    # structure of every placement
    for p in d.assignments:
        t = by_id[p.task_id]
        assert [n.rank for n in p.nodes] == list(range(t.node_count)), "exactly node_count nodes, ranked"
        assert len({n.worker_id for n in p.nodes}) == t.node_count, "a gang's nodes are on distinct workers"
        for n in p.nodes:
            assert n.worker_id in state, "placed on an active worker"
            assert len(n.gpus) == len(set(n.gpus)) == t.gpu
            if t.gpu and t.gpu_type:
                assert (wmap[n.worker_id].gpu_type or "").lower() == t.gpu_type.lower()

    key = {
        t.id: order_key(t, now=kw["now"], aging_rate=kw["aging_rate"], aging_cap=kw["aging_cap"])
        for t in queue
    }
    assert [key[p.task_id] for p in d.assignments] == sorted(key[p.task_id] for p in d.assignments)

    shadow = d.shadow
    if shadow is not None:
        owner = by_id[shadow.task_id]
        assert shadow.task_id in pending and pending[shadow.task_id].endswith("is held for it")
        assert owner.node_count > 1 or kw["shadow_single_node"]
        assert len({n.worker_id for n in shadow.nodes}) == len(shadow.nodes) == owner.node_count

    # the replay
    shadow_passed = False  # the shadow's owner is behind us: its held capacity is out of reach
    first_pending: dict[str, dict[str, Free] | None] = {}  # shape -> state without shadow, first time
    for t in sorted(queue, key=lambda t: key[t.id]):
        pl = placements.get(t.id)
        if pl is None:
            assert not fits(t, wmap, state, held), f"{t.id} was left pending but fits: {pending[t.id]}"
            if fits(t, wmap, initial_state(workers), held):
                # it would have run on the capacity passed in: only tasks ahead of it (or the
                # capacity held for one of them) can have stopped it
                assert pending[t.id].startswith("priority:"), pending[t.id]
            without_shadow = None
            if shadow_passed:
                assert shadow is not None
                without_shadow = copy_state(state)
                for sn in shadow.nodes:
                    add(without_shadow[sn.worker_id], sn)
            # Reasons are settled once per shape, when its first task fails: what a shadow
            # reason claims holds at that turn (later tasks of the shape meet less capacity).
            without_shadow = first_pending.setdefault(t.shape, without_shadow)
            check_reason(t, pending[t.id], wmap, state, without_shadow, workers, held)
        else:
            for n in pl.nodes:
                f = state[n.worker_id]
                assert node_fits(t, wmap[n.worker_id], f, held), f"{t.id} placed where it does not fit"
                assert set(n.gpus) <= usable_gpus(t, n.worker_id, f, held), "GPU busy, taken or reserved"
                f.cpu -= t.cpu
                f.mem -= t.memory_gb
                f.slots -= 1
                f.gpus -= set(n.gpus)
        if shadow is not None and t.id == shadow.task_id:
            shadow_passed = True
            for sn in shadow.nodes:
                f = state[sn.worker_id]
                assert set(sn.gpus) <= usable_gpus(t, sn.worker_id, f, held)
                assert sn.cpu <= f.cpu and sn.memory_gb <= f.mem and sn.slots <= f.slots
                f.cpu -= sn.cpu
                f.mem -= sn.memory_gb
                f.slots -= sn.slots
                f.gpus -= set(sn.gpus)


def copy_state(state: dict[str, Free]) -> dict[str, Free]:
    return {k: Free(f.cpu, f.mem, f.slots, set(f.gpus)) for k, f in state.items()}


def add(f: Free, n: ShadowNode) -> None:
    f.cpu += n.cpu
    f.mem += n.memory_gb
    f.slots += n.slots
    f.gpus |= set(n.gpus)


def check_reason(t, reason, wmap, state, without_shadow, workers, held) -> None:
    """What each kind of reason claims holds."""
    reason = reason.split("; capacity on ")[0]  # the shadow owner's reason says what is held
    if reason.startswith(REASON_NEVER):
        assert not fits(t, wmap, empty_state(workers), {}), "never-fit, yet an empty cluster runs it"
    elif reason.startswith(REASON_SHADOW):
        assert without_shadow is not None, "blamed a shadow that does not exist (or is not ahead of it)"
        assert fits(t, wmap, without_shadow, held), "blamed the shadow, but fits not even without it"
    elif reason == REASON_PRIORITY:
        assert fits(t, wmap, initial_state(workers), held), "blamed higher tasks, but never fitted"
    elif reason.startswith(REASON_RESERVATION):
        assert not fits(t, wmap, initial_state(workers), held)
        assert fits(t, wmap, initial_state(workers), {}), "blamed a reservation, but fits not even without"
    elif reason.startswith("waiting for"):
        m = re.match(r"waiting for (\d+) nodes; (\d+) fit now", reason)
        assert m and int(m[1]) == t.node_count > int(m[2]), reason
    elif reason.startswith("needs"):
        assert t.node_count == 1, reason
    else:
        assert reason == REASON_NO_WORKERS and not state, reason


def initial_state(workers: list[WorkerFree]) -> dict[str, Free]:
    return {
        w.id: Free(w.free_cpu, w.free_memory_gb, w.batch_available, set(w.free_gpus))
        for w in workers
        if w.active
    }


def empty_state(workers: list[WorkerFree]) -> dict[str, Free]:
    return {
        w.id: Free(
            w.total_cpu or 0, w.total_memory_gb or 0, w.batch_total or 0, set(range(w.total_gpus or 0))
        )
        for w in workers
    }


# -- the properties ---------------------------------------------------------------------------


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(scenario_st(), st.randoms(use_true_random=False))
@pytest.mark.slow
def test_decisions_replay_exactly(scenario, rnd: random.Random) -> None:
    queue, workers, reservations, kw = scenario
    d = decide(queue, workers, reservations, **kw)
    check_decision(queue, workers, reservations, kw, d)
    # deterministic, and blind to the order the queue comes in
    again = queue[:]
    rnd.shuffle(again)
    d2 = decide(again, workers, reservations, **kw)
    assert d2.assignments == d.assignments
    assert d2.pending == d.pending
    assert d2.shadow == d.shadow


SHAPES = [
    {"cpu": 1},
    {"cpu": 2, "memory_gb": 4},
    {"gpu": 1, "cpu": 1},
    {"gpu": 1, "gpu_type": "A"},
    {"gpu": 2, "cpu": 2},
    {"gpu": 4},
    {"gpu": 2, "node_count": 2},
    {"gpu": 1, "reservation_id": "r0", "user_id": "alice"},
]


@st.composite
def long_queue_st(draw: st.DrawFn) -> list[TaskReq]:
    """Long queues of a few shapes: the walk stops early, memoises and probes."""
    n = draw(st.integers(0, 900))
    rnd = random.Random(draw(st.integers(0, 2**32)))
    monotone = draw(st.booleans())
    waits = sorted((rnd.random() * 20 for _ in range(n)), reverse=monotone)
    # one shape is rare, so that long runs of tasks that cannot fit hide the few that can
    weights = [
        1 if k == draw(st.integers(0, len(SHAPES) - 1)) else rnd.choice([1, 40]) for k in range(len(SHAPES))
    ]
    queue = [
        TaskReq(
            id=f"t{i}",
            seq=i,
            priority=rnd.randint(1, 10),
            created_at=NOW - waits[i] * 3600.0,
            **rnd.choices(SHAPES, weights)[0],  # type: ignore[arg-type]
        )
        for i in range(n)
    ]
    if draw(st.booleans()):
        queue.sort(key=lambda t: (-t.priority, t.seq))
    return queue


@st.composite
def roomy_workers_st(draw: st.DrawFn) -> list[WorkerFree]:
    """Many batch slots and few GPUs: the walk cannot stop at "no slot left"."""
    out = []
    for i in range(draw(st.integers(1, 4))):
        total_gpus = draw(st.sampled_from([0, 1, 2, 4]))
        out.append(
            WorkerFree(
                id=f"w{i}",
                free_cpu=draw(st.integers(0, 64)),
                free_memory_gb=draw(st.integers(0, 64)),
                free_gpus=tuple(range(draw(st.integers(0, total_gpus)))),
                gpu_type=draw(st.sampled_from(TYPES)),
                batch_available=draw(st.integers(0, 64)),
                total_cpu=64,
                total_memory_gb=64,
                total_gpus=total_gpus,
                batch_total=64,
            )
        )
    return out


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.one_of(workers_st(), roomy_workers_st()), long_queue_st(), st.booleans())
def test_long_queues_replay_exactly(workers: list[WorkerFree], queue: list[TaskReq], reserve: bool) -> None:
    reservations = []
    if reserve and workers:
        w = workers[0]
        reservations = [ReservationHold(id="r0", user_id="alice", gpus={w.id: w.free_gpus[:2]})]
    kw: dict[str, Any] = {"now": NOW, "aging_rate": 1.0, "aging_cap": 15.0, "shadow_single_node": False}
    d = decide(queue, workers, reservations, **kw)
    check_decision(queue, workers, reservations, kw, d)
