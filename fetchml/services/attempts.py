"""How a placed task moves on: node reports, lost workers, and a gang's all-or-nothing end.

A single-node task follows its one worker's reports. A gang (``node_count > 1``) follows its
nodes (their statuses and rules: core/nodes.py): it is running once any node runs, collecting
once every node is collecting or done, and it ends only when every node has stopped, so its
GPUs are never handed on while one of its processes may still hold them:

- every node completed -> the task completed (exit code and output of rank 0);
- a node failed, or a cancel was asked -> the other nodes are told to stop (heartbeat
  ``cancel`` commands) and the task fails once they have;
- a node's worker was lost (and nothing failed) -> the other nodes stop and the task is
  retried as a whole (``retry_count`` + 1), or fails as "worker lost" once retries run out.

A node that fails after its gang was told to stop is recorded as ``stopped``: the failure it
reports is the stop, not a cause of its own.

A report of ``failed`` with ``interrupted`` says the worker stopped the attempt itself (a
graceful worker stop past its grace, or a worker that lost contact with the server): nothing
is wrong with the task, so it goes back to the queue at once without spending a retry (a gang:
once its other nodes have stopped). The attempt number moves on at the next placement, so
late reports of the interrupted attempt answer 409.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from fetchml.core.enums import ACTIVE_STATUSES, AuditEventType, TaskStatus
from fetchml.core.errors import ConflictError
from fetchml.core.lifecycle import CANCELLED_ERROR, TIME_LIMIT_ERROR, check_transition
from fetchml.core.nodes import (
    GangEnd,
    NodeStatus,
    PlacedNode,
    all_live_collecting,
    gang_outcome,
    is_stopping,
    spends_retry,
    stop_unstarted,
)
from fetchml.core.protocol import StatusReport
from fetchml.services.node_assignments import nodes_of, set_nodes
from fetchml.services.write_queue import Tx
from fetchml.store.tables import TaskRow

WORKER_LOST_ERROR = "worker lost"


def lose_task(tx: Tx, row: TaskRow, reason: str, now: datetime, *, spend_retry: bool = True) -> None:
    """The attempt is gone as a whole: retry the task, or fail it once retries run out.
    `spend_retry=False` (an interrupted attempt): back to the queue whatever the retries left."""
    current = TaskStatus(row.status)
    if row.cancel_requested:
        new, error = TaskStatus.FAILED, CANCELLED_ERROR
    elif not spend_retry or row.retry_count < row.max_retries:
        new, error = TaskStatus.QUEUED, None
    else:
        new, error = TaskStatus.FAILED, WORKER_LOST_ERROR
    check_transition(current, new)
    previous_worker = row.worker_id
    row.status = new.value
    row.lease_expires_at = None
    row.assigned_gpus = []
    row.node_assignments = []
    if new is TaskStatus.QUEUED:
        if spend_retry:
            row.retry_count += 1
        row.worker_id = None
        row.started_at = None
        row.error = None
        metadata: dict[str, Any] = {
            "attempt": row.attempt,
            "retry_count": row.retry_count,
            "worker_id": previous_worker,
        }
        if not spend_retry:
            metadata["interrupted"] = True
        tx.audit(
            AuditEventType.JOB_QUEUED,
            user_id=row.user_id,
            resource=f"task:{row.id}",
            action="requeue",
            success=True,
            error=reason,
            metadata=metadata,
        )
    else:
        row.ended_at = now
        row.error = error
        tx.audit(
            AuditEventType.JOB_COMPLETED,
            user_id=row.user_id,
            resource=f"task:{row.id}",
            action="fail",
            success=False,
            error=error,
            metadata={"attempt": row.attempt, "reason": reason, "worker_id": previous_worker},
        )


def unplace(tx: Tx, row: TaskRow, reason: str) -> None:
    """Take back a placement no worker has started: queued again, no retry spent."""
    check_transition(TaskStatus(row.status), TaskStatus.QUEUED)
    row.status = TaskStatus.QUEUED.value
    row.worker_id = None
    row.lease_expires_at = None
    row.assigned_gpus = []
    row.node_assignments = []
    tx.audit(
        AuditEventType.JOB_QUEUED,
        user_id=row.user_id,
        resource=f"task:{row.id}",
        action="requeue",
        error=reason,
        metadata={"attempt": row.attempt, "retry_count": row.retry_count},
    )


def settle_gang(tx: Tx, row: TaskRow, nodes: list[PlacedNode], now: datetime, reason: str) -> None:
    """Write the nodes back and end the task if its last node has stopped."""
    cancel = bool(row.cancel_requested)
    if is_stopping(cancel, nodes):
        stop_unstarted(nodes)
    set_nodes(row, nodes)
    outcome = gang_outcome(nodes, cancel)
    if outcome is None:
        return
    if outcome is GangEnd.COMPLETED:
        _advance(row, TaskStatus.COLLECTING)
        _finish(tx, row, TaskStatus.COMPLETED, now, exit_code=nodes[0].exit_code)
    elif outcome is GangEnd.FAILED:
        failed = next((n for n in nodes if n.status is NodeStatus.FAILED), None)
        exit_code = row.exit_code if row.exit_code is not None else (failed.exit_code if failed else None)
        if cancel:
            row.error = CANCELLED_ERROR
        _finish(tx, row, TaskStatus.FAILED, now, exit_code=exit_code)
    else:
        lose_task(tx, row, reason, now, spend_retry=spends_retry(nodes))


def _advance(row: TaskRow, to: TaskStatus) -> None:
    """Move forward through the lifecycle (preparing -> running -> collecting) up to `to`."""
    order = [TaskStatus.PREPARING, TaskStatus.RUNNING, TaskStatus.COLLECTING]
    current = TaskStatus(row.status)
    if current not in order or order.index(current) >= order.index(to):
        return
    for step in order[order.index(current) + 1 : order.index(to) + 1]:
        check_transition(TaskStatus(row.status), step)
        row.status = step.value


def _finish(tx: Tx, row: TaskRow, new: TaskStatus, now: datetime, *, exit_code: int | None) -> None:
    check_transition(TaskStatus(row.status), new)
    row.status = new.value
    row.ended_at = now
    row.lease_expires_at = None
    row.exit_code = exit_code
    if new is TaskStatus.COMPLETED:
        row.error = None
    elif not row.error:
        row.error = f"exit code {exit_code}" if exit_code is not None else "failed"
    tx.audit(
        AuditEventType.JOB_COMPLETED,
        user_id=row.user_id,
        resource=f"task:{row.id}",
        action="complete" if new is TaskStatus.COMPLETED else "fail",
        success=new is TaskStatus.COMPLETED,
        error=row.error,
        metadata={"attempt": row.attempt, "worker_id": row.worker_id, "exit_code": exit_code},
    )


def _started(tx: Tx, row: TaskRow, now: datetime) -> None:
    row.started_at = now
    tx.audit(
        AuditEventType.JOB_STARTED,
        user_id=row.user_id,
        resource=f"task:{row.id}",
        action="start",
        metadata={
            "attempt": row.attempt,
            "worker_id": row.worker_id,
            "gpus": row.assigned_gpus,
            "nodes": [{"worker_id": n["worker_id"], "gpus": n.get("gpus", [])} for n in row.node_assignments],
        },
    )


def find_node(row: TaskRow, rep: StatusReport) -> tuple[list[PlacedNode], PlacedNode]:
    """The reporting node; 409 for a report that is not about a live, claimed attempt."""
    current = TaskStatus(row.status)
    stale = ConflictError(
        f"Stale report for task {row.id}: attempt {rep.attempt} node {rep.node_rank} is not live "
        f"(attempt {row.attempt}, {current.value})"
    )
    if row.attempt != rep.attempt or current not in ACTIVE_STATUSES:
        raise stale
    nodes = nodes_of(row)
    if rep.node_rank >= len(nodes):
        raise stale
    node = nodes[rep.node_rank]
    if not node.slot_assigned or not node.live:
        raise stale
    return nodes, node


def apply_report(
    tx: Tx,
    row: TaskRow,
    nodes: list[PlacedNode],
    node: PlacedNode,
    rep: StatusReport,
    now: datetime,
    lease: timedelta,
) -> None:
    new = TaskStatus(rep.status)
    row.lease_expires_at = now + lease
    if rep.interrupted and new is TaskStatus.FAILED:
        _interrupted(tx, row, nodes, node, rep, now)
        return
    to = NodeStatus(new.value)
    if node.status is to:
        return  # a repeated report renews the lease and changes nothing
    if rep.started and row.status == TaskStatus.PREPARING.value and new is not TaskStatus.RUNNING:
        # The process ran and ended before its running report went out: this report stands for
        # that one too, so the task starts (stamped, audited) before it moves on.
        _advance(row, TaskStatus.RUNNING)
        _started(tx, row, now)
    if len(nodes) == 1:
        if new is TaskStatus.COMPLETED and row.status == TaskStatus.RUNNING.value:
            # Nothing to collect: a worker with no outputs reports the end straight from
            # running, and the task passes through collecting in this transaction (as a gang
            # does), one report fewer per task.
            _advance(row, TaskStatus.COLLECTING)
        check_transition(TaskStatus(row.status), new)
        node.move_to(to)
        set_nodes(row, nodes)
        if new in (TaskStatus.COMPLETED, TaskStatus.FAILED):
            if rep.output is not None:
                row.output = rep.output
            if row.cancel_requested and new is TaskStatus.FAILED:
                row.error = CANCELLED_ERROR
            elif new is TaskStatus.FAILED:
                row.error = rep.error or (
                    f"exit code {rep.exit_code}" if rep.exit_code is not None else "failed"
                )
            _finish(tx, row, new, now, exit_code=rep.exit_code)
        else:
            row.status = new.value
            if new is TaskStatus.RUNNING:
                _started(tx, row, now)
        return
    # A gang node: its own small lifecycle (core/nodes.py), then the task's status sums the
    # nodes up. Moving backwards is a 409.
    stopping = is_stopping(bool(row.cancel_requested), nodes)
    node.move_to(
        NodeStatus.STOPPED if new is TaskStatus.FAILED and stopping else to,
        subject=f"Node {rep.node_rank} of task {row.id}",
    )
    if new in (TaskStatus.COMPLETED, TaskStatus.FAILED):
        node.record_exit(rep.exit_code)
        if rep.node_rank == 0 and rep.output is not None:
            row.output = rep.output
        if new is TaskStatus.FAILED and not stopping:
            detail = rep.error or (f"exit code {rep.exit_code}" if rep.exit_code is not None else "failed")
            # The limit is the task's, not a node's fault: its error reads as a single node's.
            row.error = (
                TIME_LIMIT_ERROR
                if detail == TIME_LIMIT_ERROR
                else f"node {rep.node_rank} ({node.worker_id}) failed: {detail}"
            )
            row.exit_code = rep.exit_code  # the first failure is the task's
    if new is TaskStatus.RUNNING and row.status == TaskStatus.PREPARING.value:
        _advance(row, TaskStatus.RUNNING)
        _started(tx, row, now)
    if row.status == TaskStatus.RUNNING.value and all_live_collecting(nodes):
        _advance(row, TaskStatus.COLLECTING)
    settle_gang(tx, row, nodes, now, f"node {rep.node_rank} stopped")


def _interrupted(
    tx: Tx, row: TaskRow, nodes: list[PlacedNode], node: PlacedNode, rep: StatusReport, now: datetime
) -> None:
    """The worker stopped this node's attempt itself: requeue without spending a retry."""
    reason = f"interrupted on worker {node.worker_id}: {rep.error or 'the worker stopped'}"
    if len(nodes) == 1:
        lose_task(tx, row, reason, now, spend_retry=False)
        return
    node.move_to(NodeStatus.LOST)
    node.interrupted = True
    node.record_exit(rep.exit_code)
    settle_gang(tx, row, nodes, now, reason)


def lose_node(tx: Tx, row: TaskRow, worker_id: str, reason: str, now: datetime) -> None:
    """`worker_id` is gone: a single-node task is retried or failed at once; a gang marks the
    worker's nodes lost, stops the rest, and ends when they have stopped."""
    if row.node_count <= 1:
        lose_task(tx, row, reason, now)
        return
    nodes = nodes_of(row)
    for n in nodes:
        if n.worker_id == worker_id and n.live:
            n.move_to(NodeStatus.LOST)
    settle_gang(tx, row, nodes, now, reason)
