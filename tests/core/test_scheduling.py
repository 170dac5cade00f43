"""The scheduling decision (fetchml.core.scheduling): scenarios, one rule each."""

from __future__ import annotations

import random

import pytest

from fetchml.core.aging import (
    DEFAULT_AGING_CAP,
    DEFAULT_AGING_RATE,
    MAX_PRIORITY,
    aged_priority,
    hours_waited,
)
from fetchml.core.scheduling import (
    REASON_NEVER,
    REASON_NO_WORKERS,
    REASON_PRIORITY,
    REASON_RESERVATION,
    REASON_SHADOW,
    Decision,
    ReservationHold,
    TaskReq,
    WorkerFree,
    decide,
    order_key,
    shape_key,
)

NOW = 1_750_000_000.0
HOUR = 3600.0


def task(
    tid: str,
    seq: int,
    priority: int = 5,
    *,
    waited_h: float = 0.0,
    cpu: int = 0,
    mem: int = 0,
    gpu: int = 0,
    gpu_type: str | None = None,
    nodes: int = 1,
    reservation: str | None = None,
    user: str = "bob",
    admin: bool = False,
) -> TaskReq:
    return TaskReq(
        id=tid,
        seq=seq,
        priority=priority,
        created_at=NOW - waited_h * HOUR,
        cpu=cpu,
        memory_gb=mem,
        gpu=gpu,
        gpu_type=gpu_type,
        node_count=nodes,
        reservation_id=reservation,
        user_id=user,
        is_admin=admin,
    )


def worker(
    wid: str,
    *,
    gpus: tuple[int, ...] = (),
    total_gpus: int | None = None,
    gpu_type: str | None = None,
    cpu: int = 64,
    mem: int = 256,
    slots: int = 8,
    active: bool = True,
) -> WorkerFree:
    return WorkerFree(
        id=wid,
        free_cpu=cpu,
        free_memory_gb=mem,
        free_gpus=gpus,
        gpu_type=gpu_type,
        batch_available=slots,
        active=active,
        total_cpu=64,
        total_memory_gb=256,
        total_gpus=total_gpus if total_gpus is not None else max(len(gpus), 8 if gpus else 0),
        batch_total=8,
    )


def run(queue: list[TaskReq], workers: list[WorkerFree], reservations=(), **kw: object) -> Decision:
    kw.setdefault("now", NOW)
    return decide(queue, workers, list(reservations), **kw)  # type: ignore[arg-type]


def placed(d: Decision) -> dict[str, list[tuple[int, str, tuple[int, ...]]]]:
    return {p.task_id: [tuple(n) for n in p.nodes] for p in d.assignments}  # type: ignore[misc]


# -- aging -----------------------------------------------------------------------------------


def test_aged_priority_formula_cap_and_defaults() -> None:
    assert DEFAULT_AGING_RATE == 1.0
    assert DEFAULT_AGING_CAP == MAX_PRIORITY + 5.0 == 15.0
    assert aged_priority(5, 0.0) == 5.0
    assert aged_priority(5, 2.5) == 7.5
    assert aged_priority(5, 2.5, rate=0.5) == 6.25
    assert aged_priority(1, 100.0) == 15.0  # capped
    assert aged_priority(10, 3.0, cap=12.0) == 12.0
    assert aged_priority(5, -3.0) == 5.0  # clock skew: no negative aging
    assert aged_priority(12, 1.0, cap=10.0) == 12.0  # a cap below the priority does not lower it
    assert hours_waited(NOW - 7200, NOW) == 2.0
    assert hours_waited(NOW + 10, NOW) == 0.0


def test_aging_rejects_a_negative_rate() -> None:
    with pytest.raises(ValueError, match="aging rate"):
        run([task("a", 1)], [worker("w")], aging_rate=-1.0)


def test_placements_report_their_aged_priority() -> None:
    d = run([task("a", 1, 4, waited_h=3)], [worker("w")])
    assert d.assignments[0].priority_aged == aged_priority(4, 3.0) == 7.0


# -- order -----------------------------------------------------------------------------------


def one_slot() -> list[WorkerFree]:
    return [worker("w", slots=1)]


def test_higher_priority_runs_first() -> None:
    d = run([task("low", 1, 3), task("high", 2, 7)], one_slot(), aging_rate=0.0)
    assert list(placed(d)) == ["high"]
    assert d.pending == {"low": REASON_PRIORITY}


def test_equal_priority_runs_fifo_by_seq() -> None:
    queue = [task("second", 2, 5), task("first", 1, 5), task("third", 3, 5)]
    d = run(queue, [worker("w", slots=2)], aging_rate=0.0)
    assert [p.task_id for p in d.assignments] == ["first", "second"]
    assert d.pending == {"third": REASON_PRIORITY}


def test_aging_lets_an_old_low_priority_task_overtake() -> None:
    queue = [task("old-low", 1, 2, waited_h=10), task("new-top", 2, 10)]
    assert list(placed(run(queue, one_slot()))) == ["old-low"]  # 2 + 10h * 1/h = 12 > 10
    assert list(placed(run(queue, one_slot(), aging_rate=0.0))) == ["new-top"]
    assert list(placed(run(queue, one_slot(), aging_rate=0.5))) == ["new-top"]  # 7 < 10


def test_tasks_past_the_cap_run_fifo_whatever_their_priority() -> None:
    queue = [task("p1", 1, 1, waited_h=100), task("p9", 2, 9, waited_h=100)]
    d = run(queue, one_slot())
    assert list(placed(d)) == ["p1"]  # both aged to the cap (15): seq decides


def test_the_decision_does_not_depend_on_the_order_of_the_queue() -> None:
    rng = random.Random(7)
    queue = [
        task(f"t{i}", i, rng.randint(1, 10), waited_h=rng.random() * 20, gpu=rng.choice([0, 1, 2]), cpu=1)
        for i in range(300)
    ]
    workers = [worker(f"w{i}", gpus=tuple(range(4)), slots=4) for i in range(10)]
    base = run(queue, workers)
    by_seq = sorted(queue, key=lambda t: t.seq)
    by_priority = sorted(queue, key=lambda t: (-t.priority, t.seq))
    shuffled = queue[:]
    rng.shuffle(shuffled)
    for q in (by_seq, by_priority, shuffled, list(reversed(queue))):
        d = run(q, workers)
        assert d.assignments == base.assignments
        assert d.pending == base.pending
    by_id = {t.id: t for t in queue}
    keys = [order_key(by_id[p.task_id], now=NOW, aging_rate=1.0, aging_cap=15.0) for p in base.assignments]
    assert keys == sorted(keys)  # assignments come in decision order


@pytest.mark.parametrize("monotone", [True, False], ids=["created-in-seq-order", "created-skewed"])
@pytest.mark.parametrize("arrangement", ["seq", "priority-desc-seq", "shuffled"])
def test_walk_order_is_aged_priority_then_seq_on_every_path(monotone: bool, arrangement: str) -> None:
    rng = random.Random(11)
    n = 2_000
    waits = sorted((rng.random() * 30 for _ in range(n)), reverse=True)  # seq 0 waited longest
    if not monotone:
        rng.shuffle(waits)
    queue = [task(f"t{i}", i, rng.randint(1, 10), waited_h=waits[i]) for i in range(n)]
    if arrangement == "priority-desc-seq":
        queue.sort(key=lambda t: (-t.priority, t.seq))
    elif arrangement == "shuffled":
        rng.shuffle(queue)
    k = 300
    d = run(queue, [worker("w", slots=k)], aging_rate=0.7, aging_cap=12.0)
    expected = sorted(queue, key=lambda t: order_key(t, now=NOW, aging_rate=0.7, aging_cap=12.0))
    assert [p.task_id for p in d.assignments] == [t.id for t in expected[:k]]


def test_created_at_out_of_seq_order_is_still_ordered_by_aged_priority() -> None:
    # seq 2 was stamped 5 hours before seq 1 (clock skew between two servers): it has aged more
    queue = [task("a", 1, 5, waited_h=1), task("b", 2, 5, waited_h=6), task("c", 3, 5, waited_h=2)]
    d = run(queue, [worker("w", slots=2)])
    assert [p.task_id for p in d.assignments] == ["b", "c"]


def test_priorities_outside_a_byte_still_work() -> None:
    queue = [task("a", 1, 300), task("b", 2, -4), task("c", 3, 1000)]
    assert list(placed(run(queue, one_slot(), aging_rate=0.0, aging_cap=5000.0))) == ["c"]
    assert list(placed(run(queue, one_slot(), aging_rate=0.0, aging_cap=10.0))) == ["c"]


# -- matching --------------------------------------------------------------------------------


def test_gpu_indices_are_exact_and_distinct() -> None:
    queue = [task("a", 1, gpu=2), task("b", 2, gpu=2), task("c", 3, gpu=1)]
    d = run(queue, [worker("w", gpus=(1, 3, 5, 7), total_gpus=8)])
    assert placed(d) == {"a": [(0, "w", (1, 3))], "b": [(0, "w", (5, 7))]}
    assert d.pending == {"c": REASON_PRIORITY}


def test_best_fit_keeps_whole_machines_for_big_tasks() -> None:
    workers = [worker("big", gpus=tuple(range(8))), worker("small", gpus=(0, 1))]
    d = run([task("one", 1, 9, gpu=1), task("eight", 2, 5, gpu=8)], workers)
    assert placed(d) == {"one": [(0, "small", (0,))], "eight": [(0, "big", tuple(range(8)))]}


def test_cpu_only_tasks_prefer_workers_whose_gpus_are_taken() -> None:
    workers = [worker("gpu-free", gpus=(0, 1)), worker("gpu-busy", gpus=())]
    d = run([task("cpu", 1, cpu=4)], workers)
    assert placed(d) == {"cpu": [(0, "gpu-busy", ())]}


def test_gpu_type_must_match_case_insensitively() -> None:
    workers = [worker("a100", gpus=(0,), gpu_type="A100"), worker("h100", gpus=(0,), gpu_type="H100")]
    d = run([task("t", 1, gpu=1, gpu_type="h100"), task("any", 2, gpu=1)], workers)
    assert placed(d) == {"t": [(0, "h100", (0,))], "any": [(0, "a100", (0,))]}


def test_gpu_type_is_ignored_without_gpus() -> None:
    d = run([task("t", 1, gpu=0, gpu_type="H100")], [worker("w", gpu_type="A100")])
    assert list(placed(d)) == ["t"]
    assert shape_key(0, 0, 0, "H100", 1, None, "u", False) == shape_key(0, 0, 0, None, 1, None, "v", True)


def test_batch_slots_bound_tasks_per_worker() -> None:
    d = run([task(f"t{i}", i) for i in range(4)], [worker("w", slots=2)])
    assert list(placed(d)) == ["t0", "t1"]
    assert d.pending == {"t2": REASON_PRIORITY, "t3": REASON_PRIORITY}


def test_cpu_and_memory_must_fit_what_is_free() -> None:
    d = run([task("cpu", 1, cpu=16), task("mem", 2, mem=100)], [worker("w", cpu=8, mem=64)])
    assert d.assignments == []
    assert d.pending == {
        "cpu": "needs 16 CPUs; largest free: 8 on w",
        "mem": "needs 100 GB memory; largest free: 64 GB on w",
    }


def test_inactive_workers_get_nothing_but_count_for_ever_fitting() -> None:
    workers = [worker("draining", gpus=tuple(range(8)), active=False), worker("up", gpus=(0,))]
    d = run([task("t", 1, gpu=4)], workers)
    assert d.assignments == []
    assert d.pending == {"t": "needs 4 GPUs; largest free: 1 on up"}


# -- pending reasons -------------------------------------------------------------------------


def test_no_active_workers() -> None:
    d = run([task("a", 1), task("b", 2)], [worker("w", active=False)])
    assert d.pending == {"a": REASON_NO_WORKERS, "b": REASON_NO_WORKERS}
    assert run([task("a", 1)], []).pending == {"a": REASON_NO_WORKERS}


def test_reason_names_the_largest_free_gpu_count_of_the_type() -> None:
    workers = [
        worker("w-1", gpus=(0,), gpu_type="A100"),
        worker("w-2", gpus=(), gpu_type="H100"),
        worker("w-3", gpus=(4,), gpu_type="H100"),
    ]
    d = run([task("t", 1, gpu=2, gpu_type="H100")], workers)
    assert d.pending == {"t": "needs 2 GPUs of type H100; largest free: 1 on w-3"}


def test_reasons_for_what_no_worker_could_ever_run() -> None:
    workers = [worker("w-1", gpus=(0, 1), total_gpus=8, gpu_type="A100")]
    queue = [
        task("gpus", 1, gpu=16),
        task("type", 2, gpu=1, gpu_type="H100"),
        task("cpu", 3, cpu=65),
        task("mem", 4, mem=1000),
    ]
    d = run(queue, workers)
    assert d.pending == {
        "gpus": f"{REASON_NEVER}: needs 16 GPUs on one worker; the largest has 8",
        "type": f"{REASON_NEVER}: needs 1 GPU of type H100; no worker has that type",
        "cpu": f"{REASON_NEVER}: needs 65 CPUs; the largest worker has 64",
        "mem": f"{REASON_NEVER}: needs 1000 GB memory; the largest worker has 256 GB",
    }


def test_a_full_worker_is_not_mistaken_for_a_small_one() -> None:
    # only 2 GPUs free now, but the worker has 8: waiting, not "never"
    d = run([task("t", 1, gpu=8)], [worker("w", gpus=(0, 1), total_gpus=8)])
    assert d.pending == {"t": "needs 8 GPUs; largest free: 2 on w"}


def test_no_free_slot_reason() -> None:
    d = run([task("t", 1, cpu=1)], [worker("w", slots=0)])
    assert d.pending == {"t": "needs a free batch slot; none free on any active worker"}


def test_reason_for_and_by_shape_agree_with_pending() -> None:
    queue = [task(f"t{i}", i, gpu=i % 3) for i in range(20)]
    d = run(queue, [worker("w", gpus=(0, 1, 2), slots=3)])
    assert len(d.assignments) + len(d.pending) == len(queue)
    for t in queue:
        assert d.reason_for(t) == d.pending.get(t.id)


# -- gangs -----------------------------------------------------------------------------------


def test_a_gang_is_placed_whole_on_distinct_workers_with_ranks() -> None:
    workers = [worker("w-1", gpus=tuple(range(8))), worker("w-2", gpus=(0, 1, 2, 3))]
    d = run([task("g", 1, gpu=4, nodes=2)], workers)
    (p,) = d.assignments
    assert [n.rank for n in p.nodes] == [0, 1]
    assert {n.worker_id for n in p.nodes} == {"w-1", "w-2"}  # not twice on w-1, which has 8
    assert all(len(n.gpus) == 4 for n in p.nodes)


def test_a_gang_that_does_not_fit_holds_nothing() -> None:
    workers = [worker("w-1", gpus=(0, 1)), worker("w-2", gpus=(0,))]
    d = run([task("g", 1, 9, gpu=2, nodes=2), task("small", 2, 1, gpu=1)], workers)
    assert "g" not in placed(d)
    assert d.pending["g"].startswith("waiting for 2 nodes; 1 fit now")


def test_three_node_gang_on_two_workers_never_fits_and_holds_nothing() -> None:
    workers = [worker("w-1", gpus=(0, 1, 2, 3)), worker("w-2", gpus=(0, 1, 2, 3))]
    queue = [task("gang", 1, 10, gpu=2, nodes=3), task("small", 2, 1, gpu=2), task("small2", 3, 1, gpu=2)]
    d = run(queue, workers)
    assert d.pending == {
        "gang": f"{REASON_NEVER}: needs 3 nodes on distinct workers; only 2 workers could ever host one"
    }
    assert d.shadow is None  # nothing is held for a task that can never run
    assert set(placed(d)) == {"small", "small2"}


def test_three_node_gang_with_two_active_workers_waits_and_holds_nothing() -> None:
    # a third worker exists but is draining: the gang may run once it is back, not now
    workers = [
        worker("w-1", gpus=(0, 1, 2, 3)),
        worker("w-2", gpus=(0, 1, 2, 3)),
        worker("w-3", gpus=(0, 1, 2, 3), active=False),
    ]
    queue = [task("gang", 1, 10, gpu=2, nodes=3), task("small", 2, 1, gpu=2), task("small2", 3, 1, gpu=2)]
    d = run(queue, workers)
    assert d.pending == {"gang": "waiting for 3 nodes; 2 fit now"}
    assert d.shadow is None  # too few active workers to hold anything for it
    assert set(placed(d)) == {"small", "small2"}


def test_three_node_gang_with_two_nodes_free_now_waits_with_a_shadow() -> None:
    workers = [
        worker("w-1", gpus=(0, 1, 2, 3)),
        worker("w-2", gpus=(0, 1, 2, 3)),
        worker("w-3", gpus=(), total_gpus=4),  # busy now
        worker("other", gpus=(0, 1, 2, 3), gpu_type="T4"),
    ]
    queue = [
        task("gang", 1, 10, gpu=2, nodes=3, gpu_type="A100"),
        task("small", 2, 1, gpu=2),
    ]
    for w in workers[:3]:
        object.__setattr__(w, "gpu_type", "A100")
    d = run(queue, workers)
    assert d.pending["gang"] == "waiting for 3 nodes; 2 fit now; capacity on w-1, w-2, w-3 is held for it"
    assert d.shadow is not None and d.shadow.task_id == "gang"
    held = {n.worker_id: n.gpus for n in d.shadow.nodes}
    assert held == {"w-1": (0, 1), "w-2": (0, 1), "w-3": ()}
    # the small task backfills outside the held capacity: w-1's other GPUs, not held ones
    (p,) = d.assignments
    assert p.task_id == "small"
    (node,) = p.nodes
    assert node.worker_id in {"w-1", "w-2"} and set(node.gpus) == {2, 3}


# -- anti-starvation -------------------------------------------------------------------------


def test_shadow_blocks_lower_priority_backfill_on_its_workers_but_not_elsewhere() -> None:
    workers = [
        worker("w-1", gpus=(0, 1, 2, 3), total_gpus=8),
        worker("w-2", gpus=(0, 1, 2, 3), total_gpus=8),
        worker("w-3", gpus=(0, 1, 2, 3), total_gpus=4),  # can never host an 8-GPU node
    ]
    queue = [task("big", 1, 10, gpu=8, nodes=2)] + [task(f"s{i}", 2 + i, 2, gpu=1) for i in range(6)]
    d = run(queue, workers)
    assert d.shadow is not None and d.shadow.task_id == "big"
    assert [n.worker_id for n in d.shadow.nodes] == ["w-1", "w-2"]
    assert d.pending["big"].startswith("waiting for 2 nodes; 0 fit now")
    got = placed(d)
    assert sorted(got) == ["s0", "s1", "s2", "s3"]  # all on w-3, none on the shadow set
    assert {nodes[0][1] for nodes in got.values()} == {"w-3"}
    assert d.pending["s4"] == f"{REASON_SHADOW} big"
    # without the gang, the small tasks would have spread over every worker
    assert len(run(queue[1:], workers).assignments) == 6


def test_the_shadow_goes_to_the_highest_blocked_gang_only() -> None:
    workers = [worker(f"w-{i}", gpus=(0, 1), total_gpus=8) for i in range(3)]
    queue = [
        task("gang-a", 1, 9, gpu=4, nodes=2),
        task("gang-b", 2, 8, gpu=4, nodes=2),
        task("single", 3, 1, gpu=1),
    ]
    d = run(queue, workers)
    assert d.shadow is not None and d.shadow.task_id == "gang-a"
    assert "is held for it" not in d.pending["gang-b"]
    assert placed(d) == {"single": [(0, "w-2", (0,))]}  # w-0, w-1 are held for gang-a


def test_higher_priority_tasks_are_not_limited_by_a_lower_gangs_shadow() -> None:
    workers = [worker(f"w-{i}", gpus=(0, 1), total_gpus=8) for i in range(2)]
    queue = [task("top", 1, 10, gpu=2), task("gang", 2, 5, gpu=8, nodes=2), task("low", 3, 1, gpu=1)]
    d = run(queue, workers)
    assert placed(d)["top"] == [(0, "w-0", (0, 1))]
    assert d.shadow is not None and d.shadow.task_id == "gang"
    assert d.pending["low"] == f"{REASON_SHADOW} gang"


def test_single_node_tasks_get_a_shadow_only_when_asked() -> None:
    workers = [worker("w-1", gpus=(0, 1, 2), total_gpus=8), worker("w-2", gpus=(0,), total_gpus=8)]
    queue = [task("eight", 1, 9, gpu=8), task("one", 2, 1, gpu=1), task("one-b", 3, 1, gpu=1)]
    d = run(queue, workers)
    assert d.shadow is None and len(d.assignments) == 2
    d = run(queue, workers, shadow_single_node=True)
    assert d.shadow is not None and d.shadow.task_id == "eight"
    assert [n.worker_id for n in d.shadow.nodes] == ["w-1"]
    assert placed(d) == {"one": [(0, "w-2", (0,))]}
    assert d.pending["one-b"] == f"{REASON_SHADOW} eight"


# -- reservations ----------------------------------------------------------------------------


def reservation() -> ReservationHold:
    return ReservationHold(id="r-1", user_id="alice", gpus={"w-1": (0, 1)}, gpu_type=None)


def test_reserved_gpus_are_withheld_from_other_tasks() -> None:
    d = run([task("bob", 1, gpu=1), task("bob2", 2, gpu=2)], [worker("w-1", gpus=(0, 1, 2))], [reservation()])
    assert placed(d) == {"bob": [(0, "w-1", (2,))]}
    assert d.pending == {"bob2": f"{REASON_RESERVATION} r-1"}


def test_the_owner_uses_the_reservation_only_with_its_id() -> None:
    workers = [worker("w-1", gpus=(0, 1))]
    d = run([task("plain", 1, gpu=1, user="alice")], workers, [reservation()])
    assert d.pending == {"plain": f"{REASON_RESERVATION} r-1"}
    d = run([task("with-id", 1, gpu=2, user="alice", reservation="r-1")], workers, [reservation()])
    assert placed(d) == {"with-id": [(0, "w-1", (0, 1))]}
    assert d.assignments[0].reservation_id == "r-1"


def test_another_users_task_cannot_borrow_the_reservation_id() -> None:
    d = run(
        [task("thief", 1, gpu=1, user="bob", reservation="r-1")],
        [worker("w-1", gpus=(0, 1))],
        [reservation()],
    )
    assert d.pending == {"thief": f"{REASON_RESERVATION} r-1"}


def test_an_admin_task_may_use_the_reservation() -> None:
    d = run(
        [task("admin", 1, gpu=1, user="root", admin=True, reservation="r-1")],
        [worker("w-1", gpus=(0, 1))],
        [reservation()],
    )
    assert placed(d) == {"admin": [(0, "w-1", (0,))]}


def test_reservation_tasks_use_reserved_gpus_first_then_general_ones() -> None:
    workers = [worker("w-0", gpus=(0, 1, 2, 3)), worker("w-1", gpus=(0, 1, 2, 3))]
    d = run([task("a", 1, gpu=3, user="alice", reservation="r-1")], workers, [reservation()])
    assert placed(d) == {"a": [(0, "w-1", (0, 1, 2))]}


def test_a_reservation_worker_without_enough_gpus_is_passed_over() -> None:
    workers = [worker("w-1", gpus=(0,)), worker("w-2", gpus=(0, 1))]  # r-1 holds w-1's GPUs 0 and 1
    d = run([task("a", 1, gpu=2, user="alice", reservation="r-1")], workers, [reservation()])
    assert placed(d) == {"a": [(0, "w-2", (0, 1))]}


def test_an_expired_reservation_is_simply_not_passed_in() -> None:
    d = run([task("bob", 1, gpu=2)], [worker("w-1", gpus=(0, 1))], [])
    assert placed(d) == {"bob": [(0, "w-1", (0, 1))]}
    # a task still carrying the id of a reservation that is gone runs on general capacity
    d = run([task("late", 1, gpu=2, user="alice", reservation="r-1")], [worker("w-1", gpus=(0, 1))], [])
    assert placed(d) == {"late": [(0, "w-1", (0, 1))]}
    assert d.assignments[0].reservation_id is None


def test_a_gang_reservation_spans_its_workers() -> None:
    res = ReservationHold(id="r-2", user_id="alice", gpus={"w-1": (0, 1), "w-2": (0, 1)})
    workers = [worker("w-1", gpus=(0, 1)), worker("w-2", gpus=(0, 1)), worker("w-3", gpus=(0, 1))]
    queue = [task("gang", 1, 1, gpu=2, nodes=2, user="alice", reservation="r-2"), task("other", 2, 9, gpu=2)]
    d = run(queue, workers, [res])
    assert placed(d) == {
        "other": [(0, "w-3", (0, 1))],
        "gang": [(0, "w-1", (0, 1)), (1, "w-2", (0, 1))],
    }


# -- scale and early stop --------------------------------------------------------------------


def test_the_walk_stops_once_nothing_more_can_fit() -> None:
    queue = [task(f"t{i}", i, 1 + i % 10, gpu=1, cpu=1) for i in range(20_000)]
    d = run(queue, [worker(f"w{i}", gpus=(0, 1), slots=2) for i in range(4)])
    assert len(d.assignments) == 8
    assert d.scanned < 100
    pending = d.pending
    assert len(pending) == 20_000 - 8
    assert set(pending.values()) == {REASON_PRIORITY}


def test_tasks_that_still_fit_deep_in_a_blocked_queue_are_found() -> None:
    # every GPU is busy; the CPU-only tasks are rare and far down the queue
    queue = [task(f"g{i}", i, 9, gpu=1) for i in range(5_000)]
    queue += [task(f"c{i}", 10_000 + i, 1, cpu=1) for i in range(3)]
    d = run(queue, [worker("w", gpus=(), total_gpus=8, slots=8)])
    assert sorted(placed(d)) == ["c0", "c1", "c2"]
    assert d.pending["g0"] == "needs 1 GPU; largest free: 0 on w"


def test_after_a_probe_the_walk_goes_on_while_any_shape_still_fits() -> None:
    queue = [task(f"g{i}", i, 9, gpu=1) for i in range(300)]  # long enough to trigger a probe
    queue += [
        task(n, 1000 + i, 1, cpu=c) for i, (n, c) in enumerate([("d1", 4), ("c1", 1), ("d2", 4), ("c2", 1)])
    ]
    d = run(queue, [worker("w", gpus=(), total_gpus=8, cpu=6, slots=8)])
    assert [p.task_id for p in d.assignments] == ["d1", "c1", "c2"]
    assert d.pending["d2"] == REASON_PRIORITY  # it fitted before c1 and d1 took the CPUs


def test_every_task_left_has_a_reason_after_an_early_stop() -> None:
    rng = random.Random(3)
    queue = [
        task(f"t{i}", i, rng.randint(1, 10), gpu=rng.choice([0, 1, 2, 8, 16]), cpu=rng.choice([1, 4, 200]))
        for i in range(3_000)
    ]
    d = run(queue, [worker(f"w{i}", gpus=tuple(range(i % 5)), total_gpus=8, slots=2) for i in range(6)])
    assert d.scanned < len(queue)
    assert set(d.pending) == {t.id for t in queue} - set(placed(d))
    assert all(isinstance(r, str) and r for r in d.pending.values())


def test_prefer_puts_a_task_on_the_asking_worker_without_changing_the_order() -> None:
    # Best fit alone would put the 1-GPU task on w-small (one free GPU).
    workers = [worker("w-big", gpus=(0, 1, 2, 3)), worker("w-small", gpus=(0,))]
    queue = [task("one", 1, gpu=1)]
    assert decide(queue, workers, now=NOW).assignments[0].nodes[0].worker_id == "w-small"
    assert decide(queue, workers, now=NOW, prefer="w-big").assignments[0].nodes[0].worker_id == "w-big"
    # A higher task that does not fit the asking worker still goes first, elsewhere.
    queue = [task("h100", 1, 9, gpu=1, gpu_type="H100"), task("low", 2, 1, gpu=1)]
    workers = [worker("w-t4", gpus=(0,), gpu_type="T4"), worker("w-h100", gpus=(0,), gpu_type="H100")]
    d = decide(queue, workers, now=NOW, prefer="w-t4")
    assert [(p.task_id, p.nodes[0].worker_id) for p in d.assignments] == [("h100", "w-h100"), ("low", "w-t4")]
    # A gang that includes the asking worker takes it as one of its nodes.
    queue = [task("gang", 1, gpu=1, nodes=2)]
    workers = [worker("a", gpus=(0,)), worker("b", gpus=(0,)), worker("c", gpus=(0, 1))]
    d = decide(queue, workers, now=NOW, prefer="c")
    assert (
        d.assignments[0].nodes[0].worker_id == "c" and len({n.worker_id for n in d.assignments[0].nodes}) == 2
    )
    assert decide(queue, workers, now=NOW, prefer="no-such-worker").assignments
