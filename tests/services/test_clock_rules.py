"""The services' time rules driven by a ManualClock, in-process on a real SQLite database: lease
expiry, the restart grace, reservation lifetimes, priority aging and audit timestamps land
exactly where the settings put them, without a second of waiting."""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar

import pytest
from sqlalchemy import select
from sqlmodel import col

from fetchml.core.clock import ManualClock
from fetchml.core.enums import Role
from fetchml.core.models import CreateReservationRequest, CreateTaskRequest
from fetchml.core.protocol import (
    ActiveAttempt,
    GpuDevice,
    HeartbeatRequest,
    RegisterWorkerRequest,
    StatusReport,
    WorkerCapabilities,
)
from fetchml.host.settings import Settings
from fetchml.services.principal import Principal
from fetchml.services.wiring import Services
from fetchml.store.tables import AuditEventRow

T = TypeVar("T")
T0 = datetime(2031, 3, 1, 9, 0, tzinfo=UTC)
LEASE = 30.0
ADMIN = Principal(user_id="root", role=Role.ADMIN, key_id="k-admin")
ALICE = Principal(user_id="alice", role=Role.USER, key_id="k-alice")


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock(T0)


@pytest.fixture
def services(tmp_path: Path, clock: ManualClock) -> Iterator[Services]:
    s = Services(Settings(data_dir=tmp_path, heartbeat_timeout=LEASE), clock=clock)
    s.start()
    try:
        yield s
    finally:
        s.stop()


def aware(t: datetime) -> datetime:
    return t if t.tzinfo else t.replace(tzinfo=UTC)


def run(coro: Coroutine[Any, Any, T]) -> T:
    return asyncio.run(coro)


def register(s: Services, name: str = "box", gpus: int = 0) -> None:
    caps = WorkerCapabilities(
        cpu_cores=4,
        memory_gb=8,
        gpu_count=gpus,
        gpu_type="T4" if gpus else None,
        gpus=[GpuDevice(index=i, name="T4") for i in range(gpus)],
    )
    run(s.workers.register(ADMIN, RegisterWorkerRequest(name=name, capabilities=caps, batch_slots=2)))


def running_task(s: Services) -> tuple[str, int]:
    task = run(s.tasks.create(ALICE, CreateTaskRequest(job_name="leased", entrypoint="x", max_retries=2)))
    a = run(s.claims.claim(ADMIN, "box", 0))
    assert a is not None and a.task.id == task.id
    run(s.claims.report(ADMIN, task.id, StatusReport(attempt=a.attempt, status="running")))
    return task.id, a.attempt


def test_the_clock_stamps_rows_and_audit_events(services: Services, clock: ManualClock) -> None:
    task = run(services.tasks.create(ALICE, CreateTaskRequest(job_name="stamped")))
    assert task.created_at == T0
    clock.advance(3600)
    got = run(services.tasks.get(task.id))
    assert got.created_at == T0
    with services.db.read() as session:
        stamps = session.scalars(select(col(AuditEventRow.timestamp))).all()
    assert stamps and all(aware(t) == T0 for t in stamps)


def test_a_lease_expires_exactly_one_timeout_after_its_last_renewal(
    services: Services, clock: ManualClock
) -> None:
    register(services)
    task_id, attempt = running_task(services)
    clock.advance(LEASE - 1)
    # A heartbeat renews it: the deadline moves to now + LEASE.
    run(
        services.workers.heartbeat(
            ADMIN, "box", HeartbeatRequest(active=[ActiveAttempt(task_id=task_id, attempt=attempt)])
        )
    )
    clock.advance(LEASE - 0.001)
    assert run(services.leases.sweep()) == []
    assert run(services.tasks.get(task_id)).status == "running"
    clock.advance(0.002)
    assert run(services.leases.sweep()) == [task_id]
    t = run(services.tasks.get(task_id))
    assert (t.status, t.retry_count, t.worker_id) == ("queued", 1, None)
    assert run(services.workers.get("box")).status == "offline"


def test_no_expiry_within_one_timeout_of_the_writer_start(tmp_path: Path, clock: ManualClock) -> None:
    """The restart grace counts on the same clock: a lease that ran out while no server was up
    is not expired until the new server had one timeout to hear from its worker."""
    first = Services(Settings(data_dir=tmp_path, heartbeat_timeout=LEASE), clock=clock)
    first.start()
    register(first)
    task_id, _ = running_task(first)
    first.stop()
    clock.advance(10 * LEASE)  # the outage
    second = Services(Settings(data_dir=tmp_path, heartbeat_timeout=LEASE), clock=clock)
    second.start()
    try:
        assert run(second.leases.sweep()) == []
        clock.advance(LEASE - 1)
        assert run(second.leases.sweep()) == []
        clock.advance(1)
        assert run(second.leases.sweep()) == [task_id]
    finally:
        second.stop()


def test_a_reservation_holds_until_its_expiry_and_not_a_moment_longer(
    services: Services, clock: ManualClock
) -> None:
    register(services, gpus=1)
    res = run(services.reservations.create(ADMIN, CreateReservationRequest(gpu_count=1, expires_minutes=1)))
    assert res.expires_at == T0 + timedelta(minutes=1)
    clock.advance(59.999)
    assert [r.id for r in run(services.reservations.list())] == [res.id]
    assert run(services.scheduler.status()).reservations_active == 1
    clock.advance(0.001)
    assert run(services.reservations.list()) == []
    # Even before the sweeper gets to it, it reads as expired; the sweep then records it.
    [listed] = run(services.reservations.list(include_expired=True))
    assert listed.status == "expired"
    assert res.id in run(services.leases.sweep())


def test_priority_aging_is_exact_on_the_clock(services: Services, clock: ManualClock) -> None:
    task = run(services.tasks.create(ALICE, CreateTaskRequest(job_name="ages", priority=1)))
    assert task.priority_aged == 1.0
    clock.advance(3 * 3600)
    assert run(services.tasks.get(task.id)).priority_aged == 4.0  # default: one point an hour
    clock.advance(100 * 3600)
    assert run(services.tasks.get(task.id)).priority_aged == 15.0  # the default cap
