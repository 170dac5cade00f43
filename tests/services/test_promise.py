"""The server keeps the shadow's promise between passes (fetchml/services/placement.py,
`Placer._promise`; docs/scheduling.md, "A promise is kept"): a gang promised a start keeps its
claim when a higher-priority gang or task arrives after it, and starts as soon as the capacity
it waited for comes back. In-process services on each database backend, with a ManualClock."""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

import pytest

from fetchml.core.clock import ManualClock
from fetchml.core.enums import Role
from fetchml.core.models import CreateTaskRequest, Task
from fetchml.core.protocol import (
    Assignment,
    GpuDevice,
    RegisterWorkerRequest,
    StatusReport,
    WorkerCapabilities,
)
from fetchml.core.scheduling import REASON_PROMISED
from fetchml.host.settings import Settings
from fetchml.services.placement import QUEUE_HEAD_MIN
from fetchml.services.principal import Principal
from fetchml.services.wiring import Services
from tests.backends import POSTGRESQL, create_database, drop_database

T = TypeVar("T")
T0 = datetime(2031, 3, 1, 9, 0, tzinfo=UTC)
ADMIN = Principal(user_id="root", role=Role.ADMIN, key_id="k-admin")
ALICE = Principal(user_id="alice", role=Role.USER, key_id="k-alice")


@pytest.fixture
def svc(backend: str, tmp_path: Path) -> Iterator[Services]:
    """On every backend under test: the claim's queue read is SQL of its own."""
    url = create_database() if backend == POSTGRESQL else None
    s = Services(Settings(data_dir=tmp_path, database_url=url, heartbeat_timeout=30.0), clock=ManualClock(T0))
    s.start()
    try:
        yield s
    finally:
        s.stop()
        if url is not None:
            drop_database(url)


def run(coro: Coroutine[Any, Any, T]) -> T:
    return asyncio.run(coro)


def register(s: Services, name: str) -> None:
    caps = WorkerCapabilities(
        cpu_cores=8,
        memory_gb=32,
        gpu_count=2,
        gpu_type="A100",
        gpus=[GpuDevice(index=i, name="A100") for i in range(2)],
    )
    run(s.workers.register(ADMIN, RegisterWorkerRequest(name=name, capabilities=caps, batch_slots=4)))


def submit(s: Services, name: str, priority: int, **fields: Any) -> Task:
    req = CreateTaskRequest(job_name=name, priority=priority, gpu=2, gpu_type="A100", **fields)
    return run(s.tasks.create(ALICE, req))


def claim(s: Services, worker: str) -> Assignment | None:
    return run(s.claims.claim(ADMIN, worker, 0))


def reason(s: Services, task: Task) -> str:
    got = run(s.tasks.get(task.id))
    assert got.status == "queued" and got.pending_reason is not None, got
    return got.pending_reason


def test_a_promised_gang_keeps_its_claim_against_later_higher_priority_work(svc: Services) -> None:
    register(svc, "a")
    register(svc, "b")
    busy = submit(svc, "busy", 5, time_limit_minutes=60)
    a = claim(svc, "a")
    assert a is not None and a.task.id == busy.id
    run(svc.claims.report(ADMIN, busy.id, StatusReport(attempt=a.attempt, status="running")))
    # "low" needs both workers: it is promised "a" once busy's limit is up (+ the allowance)
    low = submit(svc, "low", 2, node_count=2)
    assert claim(svc, "b") is None
    assert reason(svc, low).endswith("is held for it; expected to start in 1h 1m"), reason(svc, low)
    # a gang and a task that arrive later, ahead of it in the order, do not take its claim
    high = submit(svc, "high", 9, node_count=2)
    urgent = submit(svc, "urgent", 10)
    assert claim(svc, "b") is None  # urgent fits "b", but "b" is held for low, and urgent has no limit
    assert reason(svc, urgent).startswith(f"{REASON_PROMISED} {low.id}"), reason(svc, urgent)
    assert "held for it" not in reason(svc, high) and "held for it" in reason(svc, low)
    # busy ends: low starts on both workers, ahead of them
    run(svc.claims.report(ADMIN, busy.id, StatusReport(attempt=a.attempt, status="completed", exit_code=0)))
    got_a, got_b = claim(svc, "a"), claim(svc, "b")
    assert got_a is not None and got_b is not None and got_a.task.id == got_b.task.id == low.id
    assert run(svc.tasks.get(urgent.id)).status == run(svc.tasks.get(high.id)).status == "queued"


def test_the_promised_gang_is_read_even_when_older_tasks_fill_its_priority_head(svc: Services) -> None:
    """A claim reads the oldest QUEUE_HEAD_MIN+ tasks of each priority first; the promised gang
    is read with them wherever it is, so a claim cannot lose the promise by not seeing it."""
    register(svc, "a")
    register(svc, "b")
    busy = submit(svc, "busy", 5, time_limit_minutes=60)
    a = claim(svc, "a")
    assert a is not None and a.task.id == busy.id
    for i in range(QUEUE_HEAD_MIN + 8):  # blocked for ever, ahead of "low" in its priority
        run(
            svc.tasks.create(
                ALICE, CreateTaskRequest(job_name=f"never-{i}", priority=2, gpu=1, gpu_type="nope")
            )
        )
    low = submit(svc, "low", 2, node_count=2)
    assert claim(svc, "b") is None
    assert "is held for it" in reason(svc, low)
    urgent = submit(svc, "urgent", 10)
    assert claim(svc, "b") is None
    assert reason(svc, urgent).startswith(f"{REASON_PROMISED} {low.id}"), reason(svc, urgent)
