"""The write queue (fetchml/services/write_queue.py): ops queued together commit as one transaction;
an op that fails is undone alone (its savepoint, its deferred rows, its audit events) while its
neighbours commit; and every op's audit events go into the transaction of its change, so the
hash chain stays whole whatever failed.

A batch is made deterministic by queueing every op before the writer thread starts: its first
`get` then finds them all."""

from __future__ import annotations

import asyncio
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from datetime import UTC
from typing import Any

import pytest
import sqlalchemy.exc
from sqlalchemy import func, select
from sqlmodel import col

from fetchml.core.enums import AuditEventType, WorkerStatus
from fetchml.core.errors import ConflictError, InternalError, ServiceUnavailableError, ValidationError
from fetchml.core.events import FeedEvent
from fetchml.core.models import CreateTaskRequest, Task
from fetchml.services.tasks import create_task_op
from fetchml.services.write_queue import Tx, WriteQueue, run_write
from fetchml.store.tables import AuditEventRow, ServerMetaRow, TaskRow, WorkerRow
from tests.services.conftest import ALICE, T0, Kit

Op = Callable[[Tx], Any]


class Recorder:
    """A WriteQueue of its own on the test's database, not started until a batch is queued,
    and what each of its commits reported."""

    def __init__(self, kit: Kit) -> None:
        self.kit = kit
        self.writer = WriteQueue(kit.services.db, clock=kit.clock)
        self.commits: list[list[FeedEvent]] = []
        self.writer.on_commit.append(lambda events, _wakes: self.commits.append(list(events)))
        self.txs: list[Tx] = []  # the transaction each op ran in, in order

    def tagged(self, op: Op) -> Op:
        def run(tx: Tx) -> Any:
            self.txs.append(tx)
            return op(tx)

        return run

    def batch(self, *ops: Op) -> list[Any]:
        """Queues every op, then starts the writer; each op's result or exception, in order."""

        async def go() -> list[Any]:
            futures = [asyncio.ensure_future(self.writer.run(self.tagged(op))) for op in ops]
            await asyncio.sleep(0)  # each future's first step puts its op in the queue
            self.writer.start()
            return await asyncio.wait_for(asyncio.gather(*futures, return_exceptions=True), 30)

        return self.kit.run(go())


@pytest.fixture
def rec(kit: Kit) -> Iterator[Recorder]:
    r = Recorder(kit)
    try:
        yield r
    finally:
        r.writer.stop()


def create(name: str) -> Op:
    """The task service's own submission op."""
    return create_task_op(ALICE, CreateTaskRequest(job_name=name), 2, None)


def fails_after_orm_writes(tx: Tx) -> None:
    """Writes through the session (a savepoint), audits, then refuses."""
    tx.session.add(
        WorkerRow(id="ghost", name="ghost", status=WorkerStatus.ACTIVE.value, key_id="k", connected_at=T0)
    )
    tx.session.flush()
    tx.audit(AuditEventType.SCHEDULER_DRAIN, user_id="ghost", resource="worker:ghost", action="drain")
    raise ConflictError("refused after writing")


def fails_after_deferred_writes(tx: Tx) -> None:
    """Deferred inserts only (no savepoint), then refuses."""
    tx.insert(ServerMetaRow, {"key": "deferred", "value": "x"})
    tx.audit(AuditEventType.KEY_CREATED, user_id="nobody", resource="key:deferred", action="create")
    raise ValidationError("refused after queueing rows")


def crashes(tx: Tx) -> None:
    tx.audit(AuditEventType.KEY_REVOKED, user_id="nobody", resource="key:crash", action="revoke")
    raise RuntimeError("a bug")


def breaks_the_commit(tx: Tx) -> None:
    """Its rows are rejected by the database only when the batch is sent (a duplicate key)."""
    tx.insert(ServerMetaRow, {"key": "dup", "value": "1"})
    tx.insert(ServerMetaRow, {"key": "dup", "value": "2"})
    tx.audit(AuditEventType.KEY_CREATED, user_id="nobody", resource="key:dup", action="create")


def task_ids(kit: Kit) -> set[str]:
    with kit.services.db.read() as s:
        return set(s.scalars(select(col(TaskRow.id))).all())


def audit_rows(kit: Kit) -> list[tuple[int, str, str | None]]:
    with kit.services.db.read() as s:
        rows = s.execute(
            select(
                col(AuditEventRow.sequence_num), col(AuditEventRow.event_type), col(AuditEventRow.resource)
            ).order_by(col(AuditEventRow.sequence_num))
        ).all()
        return [(int(seq), str(kind), res) for seq, kind, res in rows]


def assert_chain_whole(kit: Kit, events: int) -> None:
    check = kit.verify_chain()
    assert (check.valid, check.total_events, check.first_tampered) == (True, events, None), check
    assert [seq for seq, _, _ in audit_rows(kit)] == list(range(1, events + 1))


def test_ops_queued_together_commit_as_one_transaction(kit: Kit, rec: Recorder) -> None:
    results = rec.batch(*(create(f"t{i}") for i in range(5)))
    assert all(isinstance(r, Task) for r in results)
    assert len({id(tx) for tx in rec.txs}) == 1  # one Tx for the five ops
    assert len(rec.commits) == 1  # one commit, which carried every op's feed events
    created = {e.task_id for e in rec.commits[0]}
    assert created >= {t.id for t in results}
    assert task_ids(kit) == {t.id for t in results}
    assert audit_rows(kit) == [(i + 1, "job_queued", f"task:{t.id}") for i, t in enumerate(results)]
    assert_chain_whole(kit, 5)


def test_a_failing_op_fails_alone_and_its_neighbours_commit(kit: Kit, rec: Recorder) -> None:
    results = rec.batch(
        create("a"), fails_after_orm_writes, create("b"), fails_after_deferred_writes, crashes, create("c")
    )
    a, orm, b, deferred, crash, c = results
    assert isinstance(orm, ConflictError) and orm.message == "refused after writing"
    assert isinstance(deferred, ValidationError)
    assert isinstance(crash, InternalError)  # a bug is a 500, without its details
    assert all(isinstance(t, Task) for t in (a, b, c))
    assert len({id(tx) for tx in rec.txs}) == 1 and len(rec.commits) == 1  # still one commit
    assert task_ids(kit) == {a.id, b.id, c.id}
    with kit.services.db.read() as s:
        assert s.get(WorkerRow, "ghost") is None
        assert s.get(ServerMetaRow, "deferred") is None
    # Only the survivors' audit events, numbered without a gap: the failed ops' events left
    # with their rows.
    assert audit_rows(kit) == [(i + 1, "job_queued", f"task:{t.id}") for i, t in enumerate((a, b, c))]
    assert_chain_whole(kit, 3)


def test_an_op_whose_rows_break_the_commit_fails_alone(kit: Kit, rec: Recorder) -> None:
    """The shared commit fails as a whole; the writer reruns each op in its own transaction so
    that only the culprit fails."""
    a, dup, b = rec.batch(create("a"), breaks_the_commit, create("b"))
    assert isinstance(dup, InternalError)
    assert isinstance(a, Task) and isinstance(b, Task)
    assert task_ids(kit) == {a.id, b.id}
    with kit.services.db.read() as s:
        assert (
            s.scalar(select(func.count()).select_from(ServerMetaRow).where(col(ServerMetaRow.key) == "dup"))
            == 0
        )
    assert len(rec.commits) == 2  # a and b, one by one
    assert [kind for _, kind, _ in audit_rows(kit)] == ["job_queued", "job_queued"]
    assert_chain_whole(kit, 2)


def test_the_chain_runs_on_across_batches_and_the_services_writer(kit: Kit, rec: Recorder) -> None:
    first = rec.batch(create("a"), crashes, create("b"))
    # The services' own writer (a second writer on the same database) appends next.
    kit.register("w1")
    kit.submit(name="c")
    second = rec.batch(fails_after_orm_writes, create("d"))
    assert isinstance(first[1], InternalError) and isinstance(second[0], ConflictError)
    kinds = [kind for _, kind, _ in audit_rows(kit)]
    assert kinds == ["job_queued"] * 4
    assert_chain_whole(kit, 4)


def loses_the_database(tx: Tx) -> None:
    """Meets a storage fault (the database went away), as a statement would raise it."""
    tx.audit(AuditEventType.KEY_REVOKED, user_id="nobody", resource="key:gone", action="revoke")
    raise sqlalchemy.exc.OperationalError("SELECT 1", {}, sqlite3.OperationalError("disk I/O error"))


def test_a_storage_fault_fails_the_whole_batch_and_the_writer_goes_on(
    kit: Kit, rec: Recorder, caplog: pytest.LogCaptureFixture
) -> None:
    """A fault of the database itself is no op's fault: the ops after it would meet it too (on
    PostgreSQL a lost connection refuses them with PendingRollbackError, logged as a crash), so
    the whole batch fails with the storage error, the ops before it included, and nothing of it
    is kept. The next batch commits."""
    results = rec.batch(create("before"), loses_the_database, create("after"))
    assert all(isinstance(r, ServiceUnavailableError) and r.status == 503 for r in results), results
    assert task_ids(kit) == set() and audit_rows(kit) == []
    assert "Traceback" not in caplog.text and "write op failed" not in caplog.text
    assert "write batch of 3 failed: database unavailable (OperationalError: disk I/O error)" in caplog.text
    [alone] = rec.batch(loses_the_database)
    assert isinstance(alone, ServiceUnavailableError)
    [task] = rec.batch(create("next"))
    assert isinstance(task, Task) and task_ids(kit) == {task.id}
    assert_chain_whole(kit, 1)


def _until(cond: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + 10
    while not cond():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.005)


def test_a_batch_settles_each_caller_on_its_own_loop_and_outlives_a_closed_loop(
    kit: Kit, rec: Recorder
) -> None:
    """One batch holds ops from this loop, from a loop on another thread and from a loop closed
    before its result came: each live caller gets its own op's result (the results of a batch
    reach a loop in one callback), the closed loop's op is kept, as any accepted op is, and
    the writer, which meets the closed loop while delivering, goes on."""
    gate = threading.Event()
    first: list[Any] = []

    def held(tx: Tx) -> str:
        assert gate.wait(10)
        return "held"

    rec.writer.start()
    holder = threading.Thread(target=lambda: first.append(rec.writer.run_blocking(held)))
    holder.start()
    _until(lambda: rec.writer._q.qsize() == 0, "the writer to take the first op")

    dead = asyncio.new_event_loop()
    orphan = dead.create_task(rec.writer.run(create("orphan")))
    dead.run_until_complete(asyncio.sleep(0))  # the task's first step queues its op
    orphan.cancel()
    dead.run_until_complete(asyncio.gather(orphan, return_exceptions=True))
    dead.close()

    other: list[Any] = []
    elsewhere = threading.Thread(target=lambda: other.append(asyncio.run(rec.writer.run(create("other")))))
    elsewhere.start()
    _until(lambda: rec.writer._q.qsize() == 2, "the other loop's op to be queued")

    async def here() -> Any:
        fut = asyncio.ensure_future(rec.writer.run(create("here")))
        await asyncio.sleep(0)
        assert rec.writer._q.qsize() == 3
        gate.set()
        return await asyncio.wait_for(fut, 30)

    mine = kit.run(here())
    holder.join(10)
    elsewhere.join(10)
    assert first == ["held"]
    assert isinstance(mine, Task) and mine.job_name == "here"
    assert len(other) == 1 and isinstance(other[0], Task) and other[0].job_name == "other"
    # The three creations were one batch: one commit carried all their feed events.
    names = {mine.id: "here", other[0].id: "other"}
    with kit.services.db.read() as s:
        stored = dict(s.execute(select(col(TaskRow.job_name), col(TaskRow.id))).all())
    assert set(stored) == {"here", "other", "orphan"}
    together = [c for c in rec.commits if {e.task_id for e in c} >= set(stored.values())]
    assert len(together) == 1, rec.commits
    assert {stored[n] for n in names.values()} == set(names)
    after = rec.writer.run_blocking(create("after"))
    assert isinstance(after, Task) and after.id in task_ids(kit)
    assert_chain_whole(kit, 4)


def test_run_write_commits_a_change_with_its_audit_event_or_neither(kit: Kit) -> None:
    db, clock = kit.services.db, kit.clock
    with pytest.raises(ConflictError):
        run_write(db, fails_after_orm_writes, clock)
    with pytest.raises(ValidationError):
        run_write(db, fails_after_deferred_writes, clock)
    assert audit_rows(kit) == []
    clock.advance(5)
    task = run_write(db, create("kept"), clock)
    assert task_ids(kit) == {task.id}
    [ev] = kit.audit(AuditEventType.JOB_QUEUED)
    assert (ev.resource, ev.user_id) == (f"task:{task.id}", "alice")
    stamp = ev.timestamp if ev.timestamp.tzinfo else ev.timestamp.replace(tzinfo=UTC)  # SQLite: naive UTC
    assert stamp == clock.now()  # the op's clock
    assert_chain_whole(kit, 1)


def renames_a_task(task_id: str, name: str) -> Op:
    """Changes a task through the session (an ORM update, sent at flush time)."""

    def op(tx: Tx) -> None:
        row = tx.session.scalars(select(TaskRow).where(col(TaskRow.id) == task_id)).one()
        row.job_name = name
        row.status = "failed"  # a transition: the feed must see it in this transaction's commit
        row.error = "renamed"

    return op


def test_an_op_alone_runs_without_a_savepoint_and_fails_whole(kit: Kit, rec: Recorder) -> None:
    """A batch of one op (the usual case under light load) has no savepoint: a failure rolls the
    whole transaction back, which holds nothing else, and the writer goes on."""
    [orm] = rec.batch(fails_after_orm_writes)
    assert isinstance(orm, ConflictError)
    [crash] = rec.batch(crashes)
    assert isinstance(crash, InternalError)
    [task] = rec.batch(create("after"))
    assert isinstance(task, Task)
    with kit.services.db.read() as s:
        assert s.get(WorkerRow, "ghost") is None
    assert audit_rows(kit) == [(1, "job_queued", f"task:{task.id}")]
    assert_chain_whole(kit, 1)
    assert all(tx._savepoint is None for tx in rec.txs)


def test_an_op_alone_hands_its_changes_to_the_feed(kit: Kit, rec: Recorder) -> None:
    """Without a savepoint to flush them, the op's session changes still go out before the
    transaction's feed events are taken: its transition is in the commit's events."""
    [task] = rec.batch(create("a"))
    [_] = rec.batch(renames_a_task(task.id, "b"))
    moved = [e for e in rec.commits[-1] if e.task_id == task.id]
    assert [(e.data.get("from"), e.data.get("to")) for e in moved] == [("queued", "failed")]
    with kit.services.db.read() as s:
        row = s.scalars(select(TaskRow).where(col(TaskRow.id) == task.id)).one()
        assert (row.job_name, row.status) == ("b", "failed")
