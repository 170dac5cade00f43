"""The nodes of a placed task: which worker runs each node, with which GPUs, how far it got.

A task's placement lives in ``TaskRow.node_assignments`` (one entry per node, rank order):
``{"node_id", "worker_id", "slot_assigned", "gpus", "status"}``. A single-node task has one
entry, a gang (``node_count > 1``) one per node on distinct workers. ``slot_assigned`` turns
true when the node's worker claims it. Node statuses: ``assigned`` (placed, not yet claimed),
then the worker's reports (``preparing``, ``running``, ``collecting``, ``completed``,
``failed``), ``stopped`` (it failed after its gang was told to stop), or ``lost`` (its worker
vanished, or it was never started because its gang was already stopping).

What a worker holds is derived from these entries, so a gang's capacity is counted on every
worker it runs on, and capacity is released node by node as nodes stop, never earlier.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session
from sqlmodel import col

from fetchml.core.enums import ACTIVE_STATUSES, TaskStatus
from fetchml.store.tables import TaskRow

ACTIVE = [s.value for s in ACTIVE_STATUSES]
ASSIGNED = "assigned"
LOST = "lost"
STOPPED = "stopped"  # failed after its gang was told to stop: a consequence, not a cause
TERMINAL_NODE = frozenset({TaskStatus.COMPLETED.value, TaskStatus.FAILED.value, LOST, STOPPED})
MASTER_PORT_BASE = 29500
MASTER_PORT_SPREAD = 1000


def nodes_of(row: TaskRow) -> list[dict[str, Any]]:
    """The task's node entries (copies: assign them back with `set_nodes` after a change).

    Rows placed before node entries carried gpus/status read as one claimed node holding the
    task's assigned GPUs."""
    nodes = [dict(n) for n in row.node_assignments or []]
    if not nodes and row.worker_id and row.status in ACTIVE:
        nodes = [{"node_id": 0, "worker_id": row.worker_id, "slot_assigned": True}]
    for n in nodes:
        n.setdefault("gpus", list(row.assigned_gpus or []) if n.get("node_id", 0) == 0 else [])
        n.setdefault("status", row.status if n.get("slot_assigned") else ASSIGNED)
    return nodes


def set_nodes(row: TaskRow, nodes: list[dict[str, Any]]) -> None:
    # A new list object: JSON columns only notice assignment, not in-place changes.
    row.node_assignments = [dict(n) for n in nodes]


def is_live(node: dict[str, Any]) -> bool:
    return node.get("status") not in TERMINAL_NODE


def is_stopping(row: TaskRow, nodes: list[dict[str, Any]]) -> bool:
    """A gang stops as a whole once any node failed or was lost, or a cancel was asked for."""
    return bool(row.cancel_requested) or any(
        n.get("status") in (TaskStatus.FAILED.value, LOST) for n in nodes
    )


_ACTIVE_ROWS = select(TaskRow).where(col(TaskRow.status).in_(ACTIVE))  # built once: see capacity._HELD


def active_rows(session: Session) -> list[TaskRow]:
    return list(session.scalars(_ACTIVE_ROWS).all())


def held_by(rows: list[TaskRow], worker_id: str) -> Iterator[tuple[TaskRow, dict[str, Any]]]:
    """(task, node) for every live node on `worker_id`."""
    for row in rows:
        for n in nodes_of(row):
            if n["worker_id"] == worker_id and is_live(n):
                yield row, n


def nodes_on(session: Session, worker_id: str) -> list[tuple[TaskRow, dict[str, Any]]]:
    return list(held_by(active_rows(session), worker_id))


def master_port(row: TaskRow) -> int:
    """A port per task (spread by seq) so two gangs whose rank 0 shares a worker do not clash."""
    return MASTER_PORT_BASE + (row.seq or 0) % MASTER_PORT_SPREAD
