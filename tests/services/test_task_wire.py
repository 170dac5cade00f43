"""A submission's answer is built from a template (new_task_to_wire) instead of validating a
whole Task again: it must be the Task task_to_wire makes of the same row, to the byte."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from types import SimpleNamespace
from typing import Any, cast

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fetchml.core.enums import Role
from fetchml.core.models import CreateTaskRequest, Task
from fetchml.server.app import encode_model
from fetchml.services.principal import Principal
from fetchml.services.task_submit import new_task_values
from fetchml.services.task_wire import new_task_to_wire, task_to_wire
from fetchml.store.tables import TaskRow

ALICE = Principal(user_id="alice", role=Role.USER, key_id="k1")
SHA = "ab" * 32

_names = st.from_regex(r"[a-zA-Z0-9_-]{1,12}", fullmatch=True)
_text = st.text(max_size=24)
_requests = st.fixed_dictionaries(
    {"job_name": _names},
    optional={
        "priority": st.integers(1, 10),
        "args": _text,
        "entrypoint": _text,
        "snapshot_id": _names,
        "cpu": st.integers(0, 64),
        "memory_gb": st.integers(0, 512),
        "gpu": st.integers(0, 8),
        "gpu_type": _names,
        "image": _text,
        "max_retries": st.integers(0, 100),
        "node_count": st.integers(1, 4),
        "reservation_id": _names,
        "metadata": st.dictionaries(st.text(max_size=8), _text, max_size=4),
        # What sends a task down task_to_wire's own path (redaction, models to convert).
        "datasets": st.lists(st.sampled_from(["mnist", "https://u:secret@example.com/d.tar"]), max_size=2),
        "dataset_specs": st.lists(
            st.builds(
                lambda n, s: {"name": n, "source": s, "sha256": SHA},
                _names,
                st.sampled_from(["file:///data/x", "https://u:pw@example.com/y"]),
            ),
            max_size=1,
        ),
        "plugin_configs": st.dictionaries(
            st.sampled_from(["mlflow", "wandb"]), st.just({"enabled": True}), max_size=1
        ),
    },
)


def _json(task: Task) -> tuple[bytes, dict[str, Any]]:
    return bytes(encode_model(task)), task.model_dump(mode="json")


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    body=_requests,
    default_retries=st.integers(0, 5),
    limit=st.none() | st.integers(1, 10_000),
    micros=st.integers(0, 999_999),
)
def test_a_new_task_answers_as_task_to_wire_would(
    body: dict[str, Any], default_retries: int, limit: int | None, micros: int
) -> None:
    req = CreateTaskRequest.model_validate(body)
    now = datetime(2026, 12, 3, 22, 0, 0, micros, tzinfo=UTC) + timedelta(days=micros % 7)
    status = {name: {"name": name} for name in req.plugin_configs or {}}
    values = new_task_values(ALICE, req, default_retries, now, limit, status)
    reference = task_to_wire(cast(TaskRow, SimpleNamespace(**values)))
    assert _json(new_task_to_wire(values)) == _json(reference)


def test_tasks_built_from_the_template_share_nothing() -> None:
    req = CreateTaskRequest(job_name="a", metadata={"k": "v"})
    now = datetime(2026, 12, 3, tzinfo=UTC)
    one = new_task_to_wire(new_task_values(ALICE, req, 0, now, None, {}))
    two = new_task_to_wire(new_task_values(ALICE, req, 0, now, None, {}))
    one.metadata["k"] = "changed"
    one.assigned_gpus.append(3)
    one.without(frozenset({"args"}))
    assert two.metadata == {"k": "v"} and two.assigned_gpus == []
    assert "args" in two.model_dump() and one.id != two.id
    fresh = new_task_to_wire(new_task_values(ALICE, req, 0, now, None, {}))
    assert fresh.metadata == {"k": "v"} and fresh.assigned_gpus == [] and "args" in fresh.model_dump()
