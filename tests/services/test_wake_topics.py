"""Which waiters a committed event wakes: a submission wakes the batch claimers only; a task's end
or new capacity also wakes the Jupyter service claimers (a queued service may fit now)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from fetchml.core.events import EventType, FeedEvent
from fetchml.events.bus import SERVICES_TOPIC, TASKS_TOPIC, task_topic
from fetchml.events.feed import wake_topics


def event(kind: EventType, task: str | None = None, **data: Any) -> FeedEvent:
    return FeedEvent(id=1, type=kind, at=datetime.now(UTC), data=data, task_id=task)


@pytest.mark.parametrize(
    ("ev", "woken"),
    [
        (event(EventType.TASK_TRANSITION, "t1", to="queued"), {task_topic("t1"), TASKS_TOPIC}),
        (event(EventType.TASK_TRANSITION, "t1", to="running"), {task_topic("t1")}),
        (event(EventType.TASK_TRANSITION, "t1", to="completed"), {task_topic("t1"), TASKS_TOPIC, SERVICES_TOPIC}),
        (event(EventType.TASK_TRANSITION, "t1", to="failed"), {task_topic("t1"), TASKS_TOPIC, SERVICES_TOPIC}),
        (event(EventType.WORKER_CONNECTED), {TASKS_TOPIC, SERVICES_TOPIC}),
    ],
)
def test_submissions_do_not_wake_service_claimers(ev: FeedEvent, woken: set[str]) -> None:
    assert wake_topics([ev]) == woken
