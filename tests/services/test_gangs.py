"""Gangs (node_count > 1): placed on N distinct workers in one pass or not at all, and ended
as a whole (fetchml/services/attempts.py): a failed node stops the others and fails the task
without a retry; a lost node stops the others and retries the gang (or fails it as "worker
lost" once retries run out)."""

from __future__ import annotations

from typing import Any

import pytest

from fetchml.core.enums import AuditEventType
from fetchml.core.errors import ConflictError
from fetchml.core.models import Task
from fetchml.core.protocol import Assignment
from tests.services.conftest import LEASE, Kit


def gang(kit: Kit, nodes: int = 2, **fields: Any) -> Task:
    body: dict[str, Any] = {"gpu": 2, "gpu_type": "A100", "node_count": nodes, "max_retries": 1}
    body.update(fields)
    return kit.submit(name="gang", **body)


def boxes(kit: Kit, *names: str, gpus: int = 2, gpu_type: str = "A100") -> list[str]:
    return [kit.register(n, gpus=gpus, gpu_type=gpu_type) for n in names]


def claim_all(kit: Kit, workers: list[str]) -> dict[str, Assignment]:
    return {w: kit.must_claim(w) for w in workers}


def test_a_gang_is_placed_on_n_workers_in_one_pass(kit: Kit) -> None:
    w = boxes(kit, "a", "b", "c")
    t = gang(kit, nodes=3)
    first = kit.must_claim("a")
    # One claim placed every node: the others are waiting for their workers' claims.
    nodes = kit.task(t.id).node_assignments
    assert sorted(n.worker_id for n in nodes) == w
    assert [n.node_id for n in nodes] == [0, 1, 2]
    assert {n.worker_id: n.slot_assigned for n in nodes} == {"a": True, "b": False, "c": False}
    rest = claim_all(kit, ["b", "c"])
    got = {"a": first, **rest}
    assert {a.task.id for a in got.values()} == {t.id}
    assert sorted(a.node_rank for a in got.values()) == [0, 1, 2]
    assert {(a.attempt, a.num_nodes) for a in got.values()} == {(1, 3)}
    assert len({(a.master_addr, a.master_port) for a in got.values()}) == 1
    rank0 = next(wid for wid, a in got.items() if a.node_rank == 0)
    assert first.master_addr == f"{rank0}.local"
    assert all(a.gpus == [0, 1] for a in got.values())
    assert all(n.slot_assigned for n in kit.task(t.id).node_assignments)


def test_a_gang_runs_and_completes_as_its_nodes_do(kit: Kit) -> None:
    boxes(kit, "a", "b")
    t = gang(kit)
    got = claim_all(kit, ["a", "b"])
    (w0, a0), (w1, a1) = sorted(got.items(), key=lambda kv: kv[1].node_rank)
    assert kit.report(w1, a1, "running").status == "running"  # running at the first node
    kit.report(w0, a0, "running")
    assert kit.report(w0, a0, "collecting").status == "running"
    assert kit.report(w1, a1, "collecting").status == "collecting"  # collecting once all are
    assert kit.report(w0, a0, "completed", exit_code=0, output="rank0").status == "collecting"
    done = kit.report(w1, a1, "completed", exit_code=0)
    assert (done.status, done.exit_code, done.output) == ("completed", 0, "rank0")
    assert len(kit.audit(AuditEventType.JOB_STARTED, f"task:{t.id}")) == 1


def test_a_gang_whose_nodes_cannot_all_be_placed_stays_queued(kit: Kit) -> None:
    kit.register("a", gpus=2, gpu_type="A100")
    kit.register("other", gpus=2, gpu_type="T4")  # the wrong type: only one worker fits
    t = gang(kit)
    assert kit.claim("a") is None
    assert kit.claim("other") is None
    got = kit.task(t.id)
    assert (got.status, got.node_assignments, got.attempt) == ("queued", [], 0)
    assert got.pending_reason is not None and "2 nodes" in got.pending_reason, got.pending_reason
    assert kit.active_tasks("a") == []
    # A second worker that fits: the whole gang goes out at once.
    kit.register("b", gpus=2, gpu_type="A100")
    got_b = kit.must_claim("b")
    assert got_b.task.id == t.id
    assert sorted(n.worker_id for n in kit.task(t.id).node_assignments) == ["a", "b"]
    assert kit.must_claim("a").task.id == t.id


def test_a_gang_waits_for_capacity_a_running_task_holds(kit: Kit) -> None:
    boxes(kit, "a", "b")
    single = kit.submit(name="single", gpu=1, gpu_type="A100")
    s = kit.must_claim("a")
    kit.report("a", s, "running")
    t = gang(kit)
    assert kit.claim("b") is None  # "a" has one GPU left, the gang needs two on each
    assert kit.task(t.id).node_assignments == []
    kit.run_to("a", s, "completed", exit_code=0)
    assert kit.task(single.id).status == "completed"
    assert kit.must_claim("b").task.id == t.id
    assert kit.must_claim("a").task.id == t.id


def test_a_failed_node_stops_the_others_and_fails_the_gang(kit: Kit) -> None:
    boxes(kit, "a", "b")
    t = gang(kit, max_retries=3)
    got = claim_all(kit, ["a", "b"])
    (w0, a0), (w1, a1) = sorted(got.items(), key=lambda kv: kv[1].node_rank)
    kit.report(w0, a0, "running")
    kit.report(w1, a1, "running")
    after = kit.report(w1, a1, "failed", exit_code=3)
    assert after.status == "running"  # rank 0 still holds its GPUs
    cmds = kit.heartbeat(w0, a0).commands
    assert [(c.type, c.task_id, c.attempt) for c in cmds] == [("cancel", t.id, a0.attempt)]
    end = kit.report(w0, a0, "failed", exit_code=-15, error="cancelled")
    assert (end.status, end.exit_code, end.retry_count) == ("failed", 3, 0)  # no retry for a failure
    assert end.error is not None and end.error.startswith(f"node 1 ({w1}) failed: exit code 3"), end.error
    assert [n.status for n in end.node_assignments] == ["stopped", "failed"]
    [ev] = kit.audit(AuditEventType.JOB_COMPLETED, f"task:{t.id}")
    assert (ev.success, ev.action) == (False, "fail")
    # Both workers are free again.
    assert kit.active_tasks(w0) == kit.active_tasks(w1) == []


def test_reports_must_name_a_live_node_of_the_live_attempt(kit: Kit) -> None:
    boxes(kit, "a", "b")
    gang(kit)
    got = claim_all(kit, ["a", "b"])
    w1, a1 = next((w, a) for w, a in got.items() if a.node_rank == 1)
    with pytest.raises(ConflictError):
        kit.report(w1, a1.model_copy(update={"node_rank": 5}), "running")
    with pytest.raises(ConflictError):
        kit.report(w1, a1, "running", attempt=a1.attempt + 1)
    kit.report(w1, a1, "collecting")
    with pytest.raises(ConflictError):  # a node moves forward only
        kit.report(w1, a1, "running")


@pytest.mark.parametrize(("max_retries", "outcome"), [(1, "queued"), (0, "failed")])
def test_a_lost_node_stops_the_gang_and_retries_it_as_a_whole(
    kit: Kit, max_retries: int, outcome: str
) -> None:
    boxes(kit, "a", "b")
    t = gang(kit, max_retries=max_retries)
    got = claim_all(kit, ["a", "b"])
    (w0, a0), (w1, a1) = sorted(got.items(), key=lambda kv: kv[1].node_rank)
    kit.report(w0, a0, "running")
    kit.report(w1, a1, "running")
    # w1 falls silent; w0 keeps beating (which keeps the gang's lease), and is told to stop
    # once w1 is declared lost.
    for _ in range(4):
        kit.clock.advance(LEASE / 3)
        assert kit.heartbeat(w0, a0).status == "active"
        kit.sweep()
    statuses = {n.worker_id: n.status for n in kit.task(t.id).node_assignments}
    assert statuses == {w0: "running", w1: "lost"}
    assert [(c.type, c.task_id) for c in kit.heartbeat(w0, a0).commands] == [("cancel", t.id)]
    end = kit.report(w0, a0, "failed", exit_code=-15, error="cancelled")
    if outcome == "queued":
        assert (end.status, end.retry_count, end.node_assignments) == ("queued", 1, [])
    else:
        assert (end.status, end.error, end.retry_count) == ("failed", "worker lost", 0)
    # The old attempt is over: a late report of the lost node is refused.
    with pytest.raises(ConflictError):
        kit.report(w1, a1, "completed", exit_code=0)


def test_draining_a_worker_takes_back_a_gang_node_it_never_started(kit: Kit) -> None:
    boxes(kit, "a", "b")
    t = gang(kit)
    a = kit.must_claim("a")  # rank on "b" placed, not claimed
    assert {n.worker_id: n.slot_assigned for n in kit.task(t.id).node_assignments} == {"a": True, "b": False}
    kit.drain("b")
    # The gang cannot run without that node: "a" is told to stop, and the gang goes back to
    # the queue once it has; no retry is spent on a node that never ran.
    assert [c.task_id for c in kit.heartbeat("a", a).commands] == [t.id]
    end = kit.report("a", a, "failed", exit_code=-15, error="cancelled")
    assert (end.status, end.retry_count, end.node_assignments) == ("queued", 0, [])
    assert kit.claim("a") is None  # one active worker cannot host a 2-node gang
