"""The nodes of a placed task, as stored: `TaskRow.node_assignments` read into and written
from `fetchml.core.nodes.PlacedNode` (the statuses, their transitions and a gang's rules
live there), and the queries of what each worker holds.

What a worker holds is derived from these entries, so a gang's capacity is counted on every
worker it runs on, and capacity is released node by node as nodes stop, never earlier.
"""

from __future__ import annotations

from collections.abc import Iterator

from sqlalchemy import select
from sqlalchemy.orm import Session
from sqlmodel import col

from fetchml.core.enums import ACTIVE_STATUSES
from fetchml.core.nodes import PlacedNode
from fetchml.store.tables import TaskRow

ACTIVE = [s.value for s in ACTIVE_STATUSES]


def nodes_of(row: TaskRow) -> list[PlacedNode]:
    """The task's nodes (new objects: assign them back with `set_nodes` after a change).

    Rows placed before node entries carried gpus/status read as one claimed node holding the
    task's assigned GPUs, at the task's status."""
    stored = row.node_assignments or []
    if not stored and row.worker_id and row.status in ACTIVE:
        stored = [{"node_id": 0, "worker_id": row.worker_id, "slot_assigned": True}]
    gpus = row.assigned_gpus or []
    return [PlacedNode.from_json(n, task_gpus=gpus, task_status=row.status) for n in stored]


def set_nodes(row: TaskRow, nodes: list[PlacedNode]) -> None:
    # A new list object: JSON columns only notice assignment, not in-place changes.
    row.node_assignments = [n.to_json() for n in nodes]


_ACTIVE_ROWS = select(TaskRow).where(col(TaskRow.status).in_(ACTIVE))  # built once: see capacity._HELD


def active_rows(session: Session) -> list[TaskRow]:
    return list(session.scalars(_ACTIVE_ROWS).all())


def held_by(rows: list[TaskRow], worker_id: str) -> Iterator[tuple[TaskRow, PlacedNode]]:
    """(task, node) for every live node on `worker_id`."""
    for row in rows:
        for n in nodes_of(row):
            if n.worker_id == worker_id and n.live:
                yield row, n


def nodes_on(session: Session, worker_id: str) -> list[tuple[TaskRow, PlacedNode]]:
    return list(held_by(active_rows(session), worker_id))
