"""Claims: what a worker's claim gets, decided by the placement service in-process. A task is
claimed only by a worker it fits (GPU count and type, CPUs, memory, free batch slots), in
priority order then FIFO, and never by a worker that is draining."""

from __future__ import annotations

from typing import Any

import pytest

from fetchml.core.errors import ForbiddenError, NotFoundError
from tests.services.conftest import ALICE, Kit, worker_key


def test_a_worker_claims_a_queued_task_that_fits(kit: Kit) -> None:
    kit.register("w1", gpus=2, gpu_type="A100")
    t = kit.submit(name="fits", gpu=1, gpu_type="a100")  # the type matches case-insensitively
    a = kit.must_claim("w1")
    assert (a.task.id, a.attempt, a.gpus, a.node_rank, a.num_nodes) == (t.id, 1, [0], 0, 1)
    got = kit.task(t.id)
    assert (got.status, got.worker_id, got.assigned_gpus, got.attempt) == ("preparing", "w1", [0], 1)
    assert [(n.worker_id, n.slot_assigned) for n in got.node_assignments] == [("w1", True)]
    assert kit.active_tasks("w1") == [t.id]
    # Claimed once: the next claim finds nothing.
    assert kit.claim("w1") is None


def test_gpus_are_handed_out_without_overlap(kit: Kit) -> None:
    kit.register("w1", gpus=2, gpu_type="A100", batch_slots=8)
    ids = [kit.submit(name=f"g{i}", gpu=1, gpu_type="A100").id for i in range(3)]
    a0, a1 = kit.must_claim("w1"), kit.must_claim("w1")
    assert [a0.task.id, a1.task.id] == ids[:2]
    assert sorted(a0.gpus + a1.gpus) == [0, 1]
    assert kit.claim("w1") is None  # the third waits for a GPU
    kit.run_to("w1", a0, "running", "completed", exit_code=0)
    a2 = kit.must_claim("w1")
    assert (a2.task.id, a2.gpus) == (ids[2], a0.gpus)


@pytest.mark.parametrize(
    "fields",
    [
        {"gpu": 3, "gpu_type": "T4"},  # more GPUs than the worker has
        {"gpu": 1, "gpu_type": "H100"},  # a type the worker does not have
        {"cpu": 16},  # more CPUs
        {"memory_gb": 64},  # more memory
    ],
    ids=["gpu-count", "gpu-type", "cpu", "memory"],
)
def test_a_task_that_does_not_fit_is_not_claimed(kit: Kit, fields: dict[str, Any]) -> None:
    kit.register("w1", gpus=2, gpu_type="T4", cpu=8, memory_gb=32)
    big = kit.submit(name="big", priority=10, **fields)
    # A smaller task behind it (lower priority) is not held up by one that can never fit here.
    small = kit.submit(name="small", priority=1, gpu=1, gpu_type="T4")
    a = kit.must_claim("w1")
    assert a.task.id == small.id
    assert kit.claim("w1") is None
    t = kit.task(big.id)
    assert (t.status, t.worker_id, t.node_assignments) == ("queued", None, [])
    assert t.pending_reason


def test_a_gpu_task_never_goes_to_a_worker_without_gpus(kit: Kit) -> None:
    kit.register("cpu-box")
    gpu = kit.submit(name="gpu", gpu=1, priority=9)
    cpu = kit.submit(name="cpu", priority=1)
    assert kit.must_claim("cpu-box").task.id == cpu.id
    assert kit.claim("cpu-box") is None
    assert kit.task(gpu.id).status == "queued"
    kit.register("gpu-box", gpus=1)
    assert kit.must_claim("gpu-box").task.id == gpu.id


def test_claims_follow_priority_then_submission_order(kit: Kit) -> None:
    ids = {name: kit.submit(name=name, priority=p).id for name, p in
           [("p3", 3), ("p7a", 7), ("p5", 5), ("p7b", 7), ("p10", 10)]}  # fmt: skip
    kit.register("w1", batch_slots=10)
    got = [kit.must_claim("w1").task.id for _ in range(5)]
    assert got == [ids[n] for n in ("p10", "p7a", "p7b", "p5", "p3")]
    assert kit.claim("w1") is None


def test_aging_lifts_an_old_task_above_a_newer_higher_priority_one(kit: Kit) -> None:
    old = kit.submit(name="old", priority=3)
    kit.clock.advance(5 * 3600)  # one point an hour by default: 3 + 5 = 8
    new = kit.submit(name="new", priority=7)
    kit.register("w1", batch_slots=1)
    assert kit.must_claim("w1").task.id == old.id
    assert kit.task(new.id).status == "queued"


def test_batch_slots_bound_what_a_worker_holds(kit: Kit) -> None:
    kit.register("w1", batch_slots=1)
    first, second = kit.submit(name="s1"), kit.submit(name="s2")
    a = kit.must_claim("w1")
    assert a.task.id == first.id
    assert kit.claim("w1") is None
    kit.run_to("w1", a, "running", "collecting")
    assert kit.claim("w1") is None  # collecting still holds the slot
    kit.report("w1", a, "completed", exit_code=0)
    assert kit.must_claim("w1").task.id == second.id


def test_a_draining_worker_claims_nothing(kit: Kit) -> None:
    kit.register("w1", batch_slots=4)
    running = kit.submit(name="running")
    a = kit.must_claim("w1")
    kit.report("w1", a, "running")
    waiting = kit.submit(name="waiting")
    kit.drain("w1")
    assert kit.claim("w1") is None
    assert kit.task(waiting.id).status == "queued"
    # Its running task goes on; once it ends, the next heartbeat holding nothing takes it offline.
    assert kit.heartbeat("w1", a).drain is True
    kit.run_to("w1", a, "collecting", "completed", exit_code=0)
    assert kit.task(running.id).status == "completed"
    assert kit.heartbeat("w1").status == "offline"
    assert kit.claim("w1") is None
    # Another worker takes what it left.
    kit.register("w2")
    assert kit.must_claim("w2").task.id == waiting.id


def test_a_worker_that_says_it_is_stopping_drains_itself(kit: Kit) -> None:
    kit.register("w1", batch_slots=4)
    t = kit.submit(name="t")
    a = kit.must_claim("w1")
    assert kit.heartbeat("w1", a, stopping=True).drain is True
    # It keeps the attempt it claimed until it reports its end, and claims nothing new.
    later = kit.submit(name="later")
    assert kit.claim("w1") is None
    assert (kit.task(t.id).status, kit.task(later.id).status) == ("preparing", "queued")
    kit.report("w1", a, "failed", interrupted=True, error="worker stopping")
    t2 = kit.task(t.id)
    assert (t2.status, t2.retry_count) == ("queued", 0)  # interrupted: no retry spent
    assert kit.heartbeat("w1").status == "offline"


def test_a_worker_key_claims_only_as_its_own_worker(kit: Kit) -> None:
    kit.register("w1")
    kit.register("w2")
    kit.submit(name="t")
    with pytest.raises(ForbiddenError):
        kit.run(kit.services.claims.claim(worker_key("w1"), "w2", 0))
    with pytest.raises(NotFoundError):
        kit.run(kit.services.claims.claim(worker_key("ghost"), "ghost", 0))
    with pytest.raises(ForbiddenError):  # a user key is no worker key
        kit.run(kit.services.claims.claim(ALICE, "w1", 0))
