"""A task row as the wire's Task: aged priority, redacted dataset sources, and the contents a
reader who is not the owner does not see. One conversion for the API and the worker protocol."""

from __future__ import annotations

from datetime import UTC, datetime
from functools import cache
from operator import attrgetter, itemgetter
from types import SimpleNamespace
from typing import Any, cast

from fetchml.core.aging import aged_priority
from fetchml.core.enums import TaskStatus
from fetchml.core.models import TASK_CONTENT_FIELDS, DatasetSpec, NodeAssignment, Task
from fetchml.core.redact import redact_text, redact_url
from fetchml.store.tables import TaskRow

# The wire fields task_to_wire works out; every other field of Task is the row's column of the
# same name, copied as it is.
_DERIVED = frozenset(
    {
        "status",
        "error",
        "datasets",
        "dataset_specs",
        "metadata",
        "plugin_configs",
        "plugin_status",
        "node_assignments",
        "priority_aged",
        "pending_reason",
        "assigned_gpus",
        "cancel_requested",
    }
)
_PLAIN = tuple(name for name in Task.model_fields if name not in _DERIVED)
_missing = [name for name in _PLAIN if name not in TaskRow.model_fields]
if _missing:  # a new wire field with no column of its name belongs in _DERIVED
    raise RuntimeError(f"Task fields with no TaskRow column: {_missing}")
_read_plain = attrgetter(*_PLAIN)
_plain_values = itemgetter(*_PLAIN)


def effective_priority(row: TaskRow, now: datetime | None, rate: float, cap: float) -> float:
    """`priority_aged`: a queued task ages from `created_at` to `now`; any other task (and any
    task when `now` is None) shows its plain priority."""
    if now is None or rate <= 0 or row.status != TaskStatus.QUEUED.value:
        return float(row.priority)
    created = row.created_at if row.created_at.tzinfo else row.created_at.replace(tzinfo=UTC)
    return aged_priority(row.priority, (now - created).total_seconds() / 3600.0, rate, cap)


def task_to_wire(
    row: TaskRow,
    *,
    now: datetime | None = None,
    aging_rate: float = 0.0,
    aging_cap: float = 10.0,
    pending_reason: str | None = None,
    contents: bool = True,
    real_sources: bool = False,
) -> Task:
    """The wire Task. Without `now` (the worker protocol's answers) nothing is aged.

    Credentials in dataset sources are redacted unless `real_sources` (only the worker's
    assignment: it downloads with them). Without `contents` (a reader who is not the owner)
    the task's contents are absent from the JSON."""
    specs = [DatasetSpec.model_validate(d) for d in row.dataset_specs or []]
    if not real_sources:
        specs = [s.model_copy(update={"source": redact_url(s.source)}) for s in specs]
    task = Task(
        **dict(zip(_PLAIN, _read_plain(row), strict=True)),
        status=TaskStatus(row.status),
        error=row.error if real_sources or row.error is None else redact_text(row.error),
        datasets=list(row.datasets or []) if real_sources else [redact_url(d) for d in row.datasets or []],
        dataset_specs=specs,
        metadata=row.extra_metadata or {},
        plugin_configs=row.plugin_configs or {},
        plugin_status=row.plugin_status or {},
        node_assignments=[NodeAssignment.model_validate(n) for n in row.node_assignments or []],
        priority_aged=effective_priority(row, now, aging_rate, aging_cap),
        pending_reason=pending_reason or row.pending_reason,
        assigned_gpus=list(row.assigned_gpus or []),
        cancel_requested=bool(row.cancel_requested),
    )
    return task if contents else task.without(TASK_CONTENT_FIELDS)


@cache
def _new_task_template() -> Task:
    return Task(
        id="-", job_name="-", status=TaskStatus.QUEUED, priority=1, created_at=datetime(2000, 1, 1, tzinfo=UTC),
        user_id="-", priority_aged=1.0,
    )  # fmt: skip


def new_task_to_wire(values: dict[str, Any]) -> Task:
    """task_to_wire of a task just submitted, its row's `values` (TaskRow's fields) built from a
    request already validated: what the submission answers. A copy of a template with this
    task's values, so no field is validated a second time; on the submission path building the
    Task cost more of the writer's time than its row's insert. A task with anything to redact
    or convert (datasets, plugins) goes through task_to_wire (tests/services/test_task_wire.py
    checks the two give the same JSON)."""
    if (
        values["datasets"]
        or values["dataset_specs"]
        or values["plugin_configs"]
        or values["plugin_status"]
        or values["node_assignments"]
        or values["error"] is not None
        or values["status"] != TaskStatus.QUEUED.value
    ):
        return task_to_wire(cast(TaskRow, SimpleNamespace(**values)))
    update = dict(zip(_PLAIN, _plain_values(values), strict=True))
    update.update(
        status=TaskStatus.QUEUED,
        error=None,
        # Fresh containers: the template's must not be shared by the tasks copied from it.
        datasets=[],
        dataset_specs=[],
        metadata=dict(values["extra_metadata"] or {}),
        plugin_configs={},
        plugin_status={},
        node_assignments=[],
        priority_aged=float(values["priority"]),
        pending_reason=values["pending_reason"],
        assigned_gpus=list(values["assigned_gpus"] or []),
        cancel_requested=bool(values["cancel_requested"]),
    )
    return _new_task_template().model_copy(update=update)
