"""Leases: a claimed attempt lives while its worker heartbeats. The sweep takes back what a
silent worker held once the lease ran out: requeued with retry_count + 1 while retries remain
(max_retries), failed as "worker lost" after that; the old attempt is fenced off (ConflictError
on its reports). Time moves on the ManualClock only."""

from __future__ import annotations

from typing import Any

import pytest

from fetchml.core.enums import AuditEventType
from fetchml.core.errors import ConflictError
from fetchml.core.protocol import Assignment
from tests.services.conftest import ALICE, LEASE, Kit


def started(kit: Kit, worker: str, **fields: Any) -> Assignment:
    t = kit.submit(name="leased", **fields)
    a = kit.must_claim(worker)
    assert a.task.id == t.id
    kit.report(worker, a, "running")
    return a


def test_heartbeats_keep_the_lease(kit: Kit) -> None:
    kit.register("w1")
    a = started(kit, "w1")
    for _ in range(6):  # three leases' worth of time
        kit.clock.advance(LEASE / 2)
        assert kit.heartbeat("w1", a).status == "active"
        assert kit.sweep() == []
    t = kit.task(a.task.id)
    assert (t.status, t.attempt, t.worker_id, t.retry_count) == ("running", 1, "w1", 0)


def test_a_silent_worker_loses_its_attempt_which_is_requeued(kit: Kit) -> None:
    kit.register("w1")
    a1 = started(kit, "w1", max_retries=2)
    tid = a1.task.id
    kit.clock.advance(LEASE - 1)
    assert kit.sweep() == []  # not before the lease ran out
    kit.register("w2")  # a live worker, registered late enough to outlast w1
    kit.clock.advance(2)
    assert tid in kit.sweep()
    t = kit.task(tid)
    assert (t.status, t.retry_count, t.worker_id, t.started_at) == ("queued", 1, None, None)
    assert t.assigned_gpus == [] and t.node_assignments == []
    [ev] = [e for e in kit.audit(AuditEventType.JOB_QUEUED, f"task:{tid}") if e.action == "requeue"]
    assert ev.extra_metadata["retry_count"] == 1 and ev.extra_metadata["worker_id"] == "w1"

    # The old attempt is fenced off, before and after the task is claimed again.
    with pytest.raises(ConflictError):
        kit.report("w1", a1, "completed", exit_code=0)
    a2 = kit.must_claim("w2")
    assert (a2.task.id, a2.attempt, a2.task.retry_count) == (tid, 2, 1)
    with pytest.raises(ConflictError):
        kit.report("w1", a1, "collecting")
    # The silent worker was declared offline: it is told so, and gets nothing until it registers.
    hb = kit.heartbeat("w1", a1)
    assert (hb.status, hb.commands) == ("offline", [])
    assert kit.claim("w1") is None

    done = kit.run_to("w2", a2, "running", "completed", exit_code=0)
    assert (done.status, done.attempt, done.retry_count, done.worker_id) == ("completed", 2, 1, "w2")
    starts = kit.audit(AuditEventType.JOB_STARTED, f"task:{tid}")
    assert [e.extra_metadata["attempt"] for e in starts] == [1, 2]


def test_retries_run_out_and_the_task_fails_as_worker_lost(kit: Kit) -> None:
    a = started(kit, kit.register("w1"), max_retries=1)
    tid = a.task.id
    for attempt, retries_after in ((1, 1), (2, None)):
        assert a.attempt == attempt
        kit.clock.advance(LEASE + 1)
        assert tid in kit.sweep()
        if retries_after is None:
            break
        assert (kit.task(tid).status, kit.task(tid).retry_count) == ("queued", retries_after)
        kit.register("w1")  # the worker comes back (a restart)
        a = kit.must_claim("w1")
        kit.report("w1", a, "running")
    t = kit.task(tid)
    assert (t.status, t.error, t.retry_count, t.attempt) == ("failed", "worker lost", 1, 2)
    assert t.ended_at == kit.clock.now()
    [ev] = kit.audit(AuditEventType.JOB_COMPLETED, f"task:{tid}")
    assert (ev.success, ev.error) == (False, "worker lost")


def test_no_retries_fails_at_the_first_lost_lease(kit: Kit) -> None:
    a = started(kit, kit.register("w1"), max_retries=0)
    kit.clock.advance(LEASE + 1)
    assert a.task.id in kit.sweep()
    t = kit.task(a.task.id)
    assert (t.status, t.error, t.retry_count) == ("failed", "worker lost", 0)
    with pytest.raises(ConflictError):
        kit.report("w1", a, "completed", exit_code=0)


def test_the_lost_attempt_of_a_cancelled_task_fails_as_cancelled(kit: Kit) -> None:
    a = started(kit, kit.register("w1"), max_retries=3)
    kit.run(kit.services.tasks.cancel(ALICE, a.task.id))
    assert kit.task(a.task.id).cancel_requested
    kit.clock.advance(LEASE + 1)
    kit.sweep()
    t = kit.task(a.task.id)
    assert (t.status, t.error) == ("failed", "cancelled")


def test_a_worker_that_registers_again_loses_what_it_held(kit: Kit) -> None:
    a = started(kit, kit.register("w1"), max_retries=1)
    # A restart: whatever it ran is gone, so the attempt ends now, without waiting for the lease.
    kit.register("w1")
    assert kit.registered["w1"].lost_tasks == [a.task.id]
    t = kit.task(a.task.id)
    assert (t.status, t.retry_count) == ("queued", 1)
    with pytest.raises(ConflictError):
        kit.report("w1", a, "completed", exit_code=0)
    assert kit.must_claim("w1").attempt == 2


def test_an_interrupted_attempt_is_requeued_without_spending_a_retry(kit: Kit) -> None:
    a = started(kit, kit.register("w1"), max_retries=0)
    t = kit.report("w1", a, "failed", interrupted=True, error="lost contact with the server")
    assert (t.status, t.retry_count) == ("queued", 0)
    with pytest.raises(ConflictError):  # late reports of the interrupted attempt
        kit.report("w1", a, "failed", exit_code=1)
    assert kit.must_claim("w1").attempt == 2
