"""The nodes of a placed task: their statuses, the one table of legal node transitions, and the
rules a gang (``node_count > 1``) lives by. Pure: services/node_assignments.py stores them.

A task's placement is one `PlacedNode` per node, in rank order, stored as the JSON of the
wire's `NodeAssignment`. A single-node task has one, a gang one per node on distinct
workers. ``slot_assigned`` turns true when the node's worker claims it. A node is
``assigned`` (placed, not yet claimed), then follows its worker's reports (``preparing``,
``running``, ``collecting``, ``completed``, ``failed``), or ends ``stopped`` (it failed after
its gang was told to stop) or ``lost`` (its worker vanished or stopped it, or it was never
started because its gang was already stopping).

A gang runs once any node runs, collects once every live node collects, and ends only when
every node has ended (`gang_outcome`), so its GPUs are never handed on while one of its
processes may still hold them.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from fetchml.core.errors import ConflictError


class NodeStatus(StrEnum):
    ASSIGNED = "assigned"
    PREPARING = "preparing"
    RUNNING = "running"
    COLLECTING = "collecting"
    COMPLETED = "completed"
    FAILED = "failed"
    STOPPED = "stopped"  # failed after its gang was told to stop: a consequence, not a cause
    LOST = "lost"


N = NodeStatus

NODE_TRANSITIONS: dict[NodeStatus, frozenset[NodeStatus]] = {
    # Placed, not yet claimed: its worker claims it (preparing), or it never starts: its worker
    # went away, drains or stops, or its gang is stopping (lost).
    N.ASSIGNED: frozenset({N.PREPARING, N.LOST}),
    # A claimed node moves forward to whatever its worker reports, skipping phases (a gang node
    # with no outputs reports completed straight from running; the task's own table keeps a
    # single-node task to its steps). Backwards is a CONFLICT. Failed after its gang was told
    # to stop is stopped; lost is its worker gone, drained or stopping it (an interrupt).
    N.PREPARING: frozenset({N.RUNNING, N.COLLECTING, N.COMPLETED, N.FAILED, N.STOPPED, N.LOST}),
    N.RUNNING: frozenset({N.COLLECTING, N.COMPLETED, N.FAILED, N.STOPPED, N.LOST}),
    N.COLLECTING: frozenset({N.COMPLETED, N.FAILED, N.STOPPED, N.LOST}),
    # Ended: a later report of that attempt is stale (409), and a gang's next try has new nodes.
    N.COMPLETED: frozenset(),
    N.FAILED: frozenset(),
    N.STOPPED: frozenset(),
    N.LOST: frozenset(),
}

TERMINAL_NODE = frozenset(s for s, exits in NODE_TRANSITIONS.items() if not exits)

# One lookup per stored entry: nodes are read on every claim's pass, and a dict beats Enum().
_BY_VALUE: dict[str, NodeStatus] = {s.value: s for s in NodeStatus}
_ABSENT: Any = object()  # a key not stored at all (a stored None is a value)

MASTER_PORT_BASE = 29500
MASTER_PORT_SPREAD = 1000


def can_node_transition(current: NodeStatus, new: NodeStatus) -> bool:
    return new in NODE_TRANSITIONS[current]


def check_node_transition(current: NodeStatus, new: NodeStatus, *, subject: str = "Node") -> None:
    """`subject` names the node in the 409's message (a report names its rank and task)."""
    if not can_node_transition(current, new):
        raise ConflictError(f"{subject} cannot move from {current.value} to {new.value}")


def node_status(value: str) -> NodeStatus:
    return _BY_VALUE.get(value) or NodeStatus(value)  # ValueError for unknown values


@dataclass(slots=True)
class PlacedNode:
    """One node of a placed task. Stored as JSON (`to_json`):
    ``{"node_id", "worker_id", "slot_assigned", "gpus", "status"}``, then ``"interrupted": true``
    once its worker stopped it, and ``"exit_code"`` once a gang node reported its end."""

    node_id: int
    worker_id: str
    slot_assigned: bool = False
    gpus: list[int] = field(default_factory=list)
    status: NodeStatus = NodeStatus.ASSIGNED
    interrupted: bool = False
    exit_code: int | None = None
    # Whether "exit_code" is stored (None included: a failure without a code is recorded too).
    exit_recorded: bool = False

    @classmethod
    def from_json(
        cls, d: Mapping[str, Any], *, task_gpus: Sequence[int] = (), task_status: str = NodeStatus.ASSIGNED
    ) -> PlacedNode:
        """Entries stored before they carried gpus and status read as their task's: node 0
        holds the task's assigned GPUs (`task_gpus`), and a claimed node is at the task's status
        (`task_status`); an unclaimed one is assigned."""
        # Read on every claim's pass for every active task's nodes: kept to plain lookups.
        node_id = d.get("node_id", 0)
        slot = bool(d.get("slot_assigned"))
        gpus = d.get("gpus", _ABSENT)
        if gpus is _ABSENT:
            gpus = list(task_gpus) if node_id == 0 else []
        status = d.get("status")
        if status is None:
            status = task_status if slot else NodeStatus.ASSIGNED
        exit_code = d.get("exit_code", _ABSENT)
        return cls(
            node_id,
            d["worker_id"],
            slot,
            list(gpus or ()),
            _BY_VALUE.get(status) or NodeStatus(status),
            bool(d.get("interrupted")),
            None if exit_code is _ABSENT else exit_code,
            exit_code is not _ABSENT,
        )

    def to_json(self) -> dict[str, Any]:
        d: dict[str, Any] = {
            "node_id": self.node_id,
            "worker_id": self.worker_id,
            "slot_assigned": self.slot_assigned,
            "gpus": list(self.gpus),
            "status": self.status.value,
        }
        if self.interrupted:
            d["interrupted"] = True
        if self.exit_recorded:
            d["exit_code"] = self.exit_code
        return d

    @property
    def live(self) -> bool:
        return self.status not in TERMINAL_NODE

    def move_to(self, new: NodeStatus, *, subject: str = "Node") -> None:
        """The one way a node's status changes: through the table."""
        check_node_transition(self.status, new, subject=subject)
        self.status = new

    def claim(self) -> None:
        """Its worker took it: it is that worker's to prepare now."""
        self.move_to(NodeStatus.PREPARING)
        self.slot_assigned = True

    def record_exit(self, exit_code: int | None) -> None:
        self.exit_code = exit_code
        self.exit_recorded = True


def is_stopping(cancel_requested: bool, nodes: Iterable[PlacedNode]) -> bool:
    """A gang stops as a whole once any node failed or was lost, or a cancel was asked for."""
    return cancel_requested or any(n.status in (NodeStatus.FAILED, NodeStatus.LOST) for n in nodes)


def stop_unstarted(nodes: Iterable[PlacedNode]) -> None:
    """Nodes of a stopping gang that no worker has claimed will never start."""
    for n in nodes:
        if not n.slot_assigned and n.live:
            n.move_to(NodeStatus.LOST)


def all_live_collecting(nodes: Iterable[PlacedNode]) -> bool:
    """A gang collects once every node still running is collecting (some may be done)."""
    live = [n.status for n in nodes if n.live]
    return bool(live) and all(s is NodeStatus.COLLECTING for s in live)


class GangEnd(StrEnum):
    COMPLETED = "completed"  # every node completed
    FAILED = "failed"  # a node failed, or a cancel was asked for
    RETRY = "retry"  # nodes were lost and nothing failed: the gang runs again as a whole


def gang_outcome(nodes: Sequence[PlacedNode], cancel_requested: bool) -> GangEnd | None:
    """How a gang ends, or None while any node is live (its GPUs are still held)."""
    if any(n.live for n in nodes):
        return None
    if all(n.status is NodeStatus.COMPLETED for n in nodes):
        return GangEnd.COMPLETED
    if cancel_requested or any(n.status is NodeStatus.FAILED for n in nodes):
        return GangEnd.FAILED
    return GangEnd.RETRY


def spends_retry(nodes: Iterable[PlacedNode]) -> bool:
    """A retried gang spends a retry if a claimed node was lost; nodes their workers stopped
    (interrupted) are not the task's fault, and nodes never started ran nothing."""
    return any(n.status is NodeStatus.LOST and n.slot_assigned and not n.interrupted for n in nodes)


def master_port(seq: int | None) -> int:
    """A port per task (spread by seq) so two gangs whose rank 0 shares a worker do not clash."""
    return MASTER_PORT_BASE + (seq or 0) % MASTER_PORT_SPREAD
