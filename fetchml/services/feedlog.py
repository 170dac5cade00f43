"""Where feed events come from: the rows a write transaction changes, read at flush time.

No service publishes events itself. A `Capture` watches the transaction's session (and the
deferred inserts `Tx.insert` sends) and notes each change to a task's status, priority or
placement, a worker's status and a reservation's status. `finish` runs last in the
transaction: it adds the queue depth when the queue moved, assigns ids (under the
database-wide write lock, so they grow in commit order), writes the rows of the replay window,
and on PostgreSQL queues a NOTIFY, which PostgreSQL delivers only if the transaction commits.
The writer hands the events to the in-process feed after the commit, never before.
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import delete, func, inspect, select, text
from sqlalchemy.orm import Session
from sqlmodel import col

from fetchml.core.enums import TERMINAL_STATUSES, TaskStatus, WorkerStatus
from fetchml.core.events import EventType, FeedEvent
from fetchml.core.lifecycle import CANCELLED_ERROR
from fetchml.events.feed import wake_topics
from fetchml.store.bulk import execute_many, fetch_rows, insert_rows, placeholder
from fetchml.store.tables import EventRow, QueueCountRow, ReservationRow, TaskRow, WorkerRow

NOTIFY_CHANNEL = "fetchml_events"
# PostgreSQL refuses NOTIFY payloads of 8000 bytes or more; stay well below it.
NOTIFY_MAX_BYTES = 7000
WAKE_ALL = "*"
DEFAULT_REPLAY_WINDOW = 10_000
_PRUNE_EVERY = 256
_QUEUED = TaskStatus.QUEUED.value
_TERMINAL = frozenset(s.value for s in TERMINAL_STATUSES)


@dataclass
class Pending:
    type: EventType
    data: dict[str, Any]
    task_id: str | None = None
    user_id: str | None = None
    # The task's priority before this flush, when a transition changed it too: the queue count
    # it leaves is the one at its old priority.
    priority_before: int | None = None


def _compact(d: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in d.items() if v is not None}


def _nodes(raw: list[dict[str, Any]] | None) -> list[dict[str, Any]] | None:
    nodes = [{"worker_id": n.get("worker_id"), "gpus": list(n.get("gpus") or [])} for n in raw or []]
    return nodes or None


def _task_head(v: dict[str, Any]) -> dict[str, Any]:
    return {"task_id": v["id"], "job_name": v.get("job_name"), "user_id": v.get("user_id")}


def _transition(v: dict[str, Any], old: str | None) -> Pending:
    new = v["status"]
    data = _task_head(v) | {
        "from": old,
        "to": new,
        "priority": v.get("priority"),
        "attempt": v.get("attempt"),
        "retry_count": v.get("retry_count"),
        "worker_id": v.get("worker_id"),
        "nodes": _nodes(v.get("node_assignments")),
        "pending_reason": v.get("pending_reason") if new == _QUEUED else None,
    }
    if new in _TERMINAL:
        data |= {
            "exit_code": v.get("exit_code"),
            "error": v.get("error"),
            "cancelled": v.get("error") == CANCELLED_ERROR,
        }
    return Pending(EventType.TASK_TRANSITION, _compact(data), v["id"], v.get("user_id"))


def _row_values(row: Any, names: tuple[str, ...]) -> dict[str, Any]:
    return {n: getattr(row, n) for n in names}


_TASK_FIELDS = (
    "id", "job_name", "user_id", "status", "priority", "attempt", "retry_count", "worker_id",
    "node_assignments", "pending_reason", "exit_code", "error",
)  # fmt: skip


def _old(state: Any, name: str) -> tuple[bool, Any]:
    """(changed, value before) of one attribute in this flush."""
    hist = state.attrs[name].history
    if not hist.has_changes():
        return False, None
    return True, (hist.deleted[0] if hist.deleted else None)


@dataclass
class Capture:
    events: list[Pending] = field(default_factory=list)
    wakes: set[str] = field(default_factory=set)
    # Why a worker went offline, when the code that did it knows (heartbeat loss).
    reasons: dict[str, str] = field(default_factory=dict)

    def inserted(self, entity: type[Any], values: dict[str, Any]) -> None:
        if entity is TaskRow:
            self.events.append(_transition(values, None))
        elif entity is ReservationRow:
            self.events.append(_reservation(values, None))
        elif entity is WorkerRow:
            self.events.append(_worker(values, None, self.reasons))

    def after_flush(self, session: Session, _ctx: Any) -> None:
        for row in session.new:
            if isinstance(row, (TaskRow, ReservationRow, WorkerRow)):
                self.inserted(type(row), {c: getattr(row, c) for c in _fields_of(row)})
        for row in session.dirty:
            if isinstance(row, TaskRow):
                self._task_changed(row)
            elif isinstance(row, WorkerRow):
                state = inspect(row)
                changed, old = _old(state, "status")
                if changed and old != row.status:
                    self.events.append(_worker(_row_values(row, ("id", "name", "status")), old, self.reasons))
                elif _old(state, "connected_at")[0] and row.status == WorkerStatus.ACTIVE.value:
                    # Registered again while still active (a restart): a new connection all the same.
                    values = _row_values(row, ("id", "name", "status"))
                    self.events.append(_worker(values, row.status, self.reasons))
            elif isinstance(row, ReservationRow):
                changed, old = _old(inspect(row), "status")
                if changed and old != row.status:
                    self.events.append(_reservation(_fields(row, ReservationRow), old))

    def _task_changed(self, row: TaskRow) -> None:
        state = inspect(row)
        status_changed, old_status = _old(state, "status")
        values = _row_values(row, _TASK_FIELDS)
        if status_changed and old_status != row.status:
            moved = _transition(values, old_status)
            prio_changed, old_prio = _old(state, "priority")
            if prio_changed and old_prio is not None:
                moved.priority_before = int(old_prio)
            self.events.append(moved)
            return
        prio_changed, old_prio = _old(state, "priority")
        if prio_changed and old_prio != row.priority:
            data = _task_head(values) | {"from": old_prio, "to": row.priority, "status": row.status}
            self.events.append(Pending(EventType.PRIORITY_CHANGED, _compact(data), row.id, row.user_id))
        # Where it runs (workers and GPUs), not how its nodes are doing: a node's claim or
        # status report alone is no placement change.
        worker_changed, old_worker = _old(state, "worker_id")
        nodes_changed, old_nodes = _old(state, "node_assignments")
        placed = (worker_changed and old_worker != row.worker_id) or (
            nodes_changed and _nodes(old_nodes) != _nodes(row.node_assignments)
        )
        if placed and row.status != _QUEUED:
            earlier = self._transition_in_this_tx(row.id, row.status)
            if earlier is not None:
                # Placed and claimed in one transaction: the transition carries where it went.
                earlier.data.update(
                    _compact({"worker_id": row.worker_id, "nodes": _nodes(row.node_assignments)})
                )
                return
            data = _task_head(values) | {
                "status": row.status,
                "worker_id": row.worker_id,
                "nodes": _nodes(row.node_assignments),
            }
            self.events.append(Pending(EventType.TASK_PLACEMENT, _compact(data), row.id, row.user_id))

    def _transition_in_this_tx(self, task_id: str, status: str) -> Pending | None:
        for p in reversed(self.events):
            if p.task_id == task_id:
                ok = p.type is EventType.TASK_TRANSITION and p.data.get("to") == status
                return p if ok else None
        return None

    def finish(self, session: Session, now: datetime, *, is_sqlite: bool, window: int) -> list[FeedEvent]:
        """Assign ids and write the rows; the events to hand out once the transaction commits."""
        if not self.events and not self.wakes:
            return []
        pending = list(self.events)
        session.flush()  # the counts below read the rows this transaction changed
        last = 0
        if pending:
            # Plain SQL: through the ORM this one scalar cost as much as a dozen rows' inserts.
            last = fetch_rows(session.connection(), _MAX_EVENT_ID)[0][0] or 0
        deltas = _queue_deltas(pending)
        if deltas:
            # Every so often the counts are taken from the tasks themselves, so a change made
            # outside fetchml (an operator's SQL) cannot leave them wrong for long.
            reconcile = (last + len(pending) + 1) // _PRUNE_EVERY != last // _PRUNE_EVERY  # +1: its own event
            pending.append(_queue_depth(session, deltas, reconcile=reconcile))
        events: list[FeedEvent] = []
        if pending:
            events = [
                FeedEvent(last + i, p.type, now, p.data, p.task_id, p.user_id)
                for i, p in enumerate(pending, 1)
            ]
            insert_rows(
                session.connection(),
                EventRow.__table__,  # type: ignore[attr-defined]
                (
                    {"id": e.id, "type": e.type.value, "at": now, "task_id": e.task_id, "user_id": e.user_id,
                     "data": e.data}
                    for e in events
                ),
            )  # fmt: skip
            top = events[-1].id
            if top // _PRUNE_EVERY != last // _PRUNE_EVERY and top > window:
                session.execute(delete(EventRow).where(col(EventRow.id) <= top - window))
        if not is_sqlite:
            session.execute(
                text("SELECT pg_notify(:channel, :payload)"),
                {
                    "channel": NOTIFY_CHANNEL,
                    "payload": notify_payload(
                        events[-1].id if events else None, self.wakes | wake_topics(events)
                    ),
                },
            )
        return events


def notify_payload(last_id: int | None, wakes: set[str]) -> str:
    body: dict[str, Any] = {"last": last_id, "wake": sorted(wakes)}
    text_ = json.dumps(body, separators=(",", ":"))
    if len(text_.encode()) > NOTIFY_MAX_BYTES:
        text_ = json.dumps({"last": last_id, "wake": [WAKE_ALL]}, separators=(",", ":"))
    return text_


def _fields_of(row: Any) -> list[str]:
    return [a.key for a in inspect(type(row)).column_attrs]


def _fields(row: Any, entity: type[Any]) -> dict[str, Any]:
    return {a.key: getattr(row, a.key) for a in inspect(entity).column_attrs}


def _queue_deltas(pending: list[Pending]) -> Counter[int]:
    """How this transaction moved the queued count of each priority (zero entries kept: a
    priority change within the queue is a change worth an event even if the sum is unchanged)."""
    deltas: Counter[int] = Counter()
    touched = False
    for p in pending:
        d = p.data
        if p.type is EventType.TASK_TRANSITION and _QUEUED in (d.get("from"), d.get("to")):
            touched = True
            prio = int(d.get("priority") or 0)
            if d.get("from") == _QUEUED:
                deltas[p.priority_before if p.priority_before is not None else prio] -= 1
            if d.get("to") == _QUEUED:
                deltas[prio] += 1
        elif p.type is EventType.PRIORITY_CHANGED and d.get("status") == _QUEUED:
            touched = True
            deltas[int(d["from"])] -= 1
            deltas[int(d["to"])] += 1
    if touched and not deltas:
        deltas[0] += 0  # queued and left in one transaction: still report the depth
    return deltas


_MAX_EVENT_ID = f"SELECT max(id) FROM {EventRow.__tablename__}"
_QUEUED_COUNTS = "SELECT priority, queued FROM queue_counts WHERE queued > 0"

_BUMP_QUEUED = (
    "INSERT INTO queue_counts (priority, queued) VALUES ({0}, {0}) "
    "ON CONFLICT (priority) DO UPDATE SET queued = queue_counts.queued + excluded.queued"
)


def _queue_depth(session: Session, deltas: Counter[int], *, reconcile: bool) -> Pending:
    """The queue_depth event, from the per-priority counts kept in `queue_counts` (updated here
    by this transaction's deltas, under the write lock): O(priorities), not O(queued tasks)."""
    table = QueueCountRow.__table__  # type: ignore[attr-defined]
    conn = session.connection()
    if reconcile:
        conn.execute(table.delete())
        counted = conn.execute(
            select(col(TaskRow.priority), func.count())
            .where(col(TaskRow.status) == _QUEUED)
            .group_by(col(TaskRow.priority))
        ).all()
        if counted:
            conn.execute(table.insert(), [{"priority": int(p), "queued": int(n)} for p, n in counted])
    else:
        moved = [(prio, delta) for prio, delta in sorted(deltas.items()) if delta]
        if moved:
            # One statement for every priority this transaction moved (a batch of submissions
            # touches many): an upsert, in SQLite and PostgreSQL alike.
            execute_many(conn, _BUMP_QUEUED.format(placeholder(conn)), moved)
    rows = fetch_rows(conn, _QUEUED_COUNTS)
    by_priority = {str(int(p)): int(n) for p, n in sorted(rows, reverse=True)}
    return Pending(EventType.QUEUE_DEPTH, {"depth": sum(by_priority.values()), "by_priority": by_priority})


def _worker(v: dict[str, Any], old: str | None, reasons: dict[str, str]) -> Pending:
    status = v["status"]
    data = _compact({"worker_id": v["id"], "name": v.get("name"), "from": old, "status": status})
    if status == WorkerStatus.ACTIVE.value:
        return Pending(EventType.WORKER_CONNECTED, data)
    if status == WorkerStatus.DRAINING.value:
        return Pending(EventType.WORKER_DRAINING, data)
    data["reason"] = reasons.get(v["id"], "offline")
    return Pending(EventType.WORKER_DISCONNECTED, data)


def _reservation(v: dict[str, Any], old: str | None) -> Pending:
    data = _compact(
        {
            "reservation_id": v["id"],
            "user_id": v.get("user_id"),
            "from": old,
            "status": v["status"],
            "gpu_count": v.get("gpu_count"),
            "gpu_type": v.get("gpu_type"),
            "node_count": v.get("node_count"),
            "expires_at": v["expires_at"].isoformat() if v.get("expires_at") else None,
        }
    )
    return Pending(EventType.RESERVATION_CHANGED, data, None, v.get("user_id"))


def row_to_event(row: EventRow) -> FeedEvent:
    """A replay-window row (`id, type, at, task_id, user_id, data`) as a FeedEvent."""
    return FeedEvent(int(row.id), EventType(row.type), row.at, dict(row.data or {}), row.task_id, row.user_id)


def events_after(session: Session, after: int, *, limit: int, task_id: str | None = None) -> list[FeedEvent]:
    q = select(EventRow).where(col(EventRow.id) > after)
    if task_id is not None:
        q = q.where(col(EventRow.task_id) == task_id)
    rows = session.scalars(q.order_by(col(EventRow.id)).limit(limit)).all()
    return [row_to_event(r) for r in rows]


def oldest_and_newest(session: Session) -> tuple[int, int]:
    lo, hi = session.execute(select(func.min(col(EventRow.id)), func.max(col(EventRow.id)))).one()
    return int(lo or 0), int(hi or 0)
