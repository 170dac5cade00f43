"""Fixtures for the service-layer rule tests: the services wired as a server wires them
(fetchml.services.wiring.Services), called in-process on one event loop, on an empty database
per test on every backend under test (tests/backends.py; a test gets the ids [sqlite] and
[postgresql]; PostgreSQL skips when unreachable, fails under CI=true), with a ManualClock that a
test advances instead of sleeping.

`Kit` plays the parts a real worker and user play over HTTP, with the principals the routes
would build from their keys: each worker acts under a worker key bound to its name.
"""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

import pytest
from sqlalchemy import select
from sqlmodel import col

from fetchml.core.audit import ChainCheck
from fetchml.core.clock import ManualClock
from fetchml.core.enums import AuditEventType, Role
from fetchml.core.models import CreateTaskRequest, Task
from fetchml.core.protocol import (
    ActiveAttempt,
    Assignment,
    GpuDevice,
    HeartbeatRequest,
    HeartbeatResponse,
    RegisterWorkerRequest,
    RegisterWorkerResponse,
    StatusReport,
    WorkerCapabilities,
)
from fetchml.host.settings import Settings
from fetchml.services.principal import Principal
from fetchml.services.wiring import Services
from fetchml.store.db import Database
from fetchml.store.tables import AuditEventRow
from tests.backends import POSTGRESQL, create_database, drop_database, pg_exec

T = TypeVar("T")
T0 = datetime(2031, 3, 1, 9, 0, tzinfo=UTC)
LEASE = 30.0  # heartbeat timeout: a lease lasts this long after its last renewal
ADMIN = Principal(user_id="root", role=Role.ADMIN, key_id="k-root")
ALICE = Principal(user_id="alice", role=Role.USER, key_id="k-alice")
BOB = Principal(user_id="bob", role=Role.USER, key_id="k-bob")


def worker_key(name: str) -> Principal:
    """What a worker key created for `name` authenticates as."""
    return Principal(user_id=f"wk-{name}", role=Role.WORKER, key_id=f"k-{name}", worker_name=name)


class Kit:
    """The services plus the moves of users and workers, each one awaited to its end."""

    def __init__(self, services: Services, clock: ManualClock, loop: asyncio.Runner) -> None:
        self.services = services
        self.clock = clock
        self._loop = loop
        self.registered: dict[str, RegisterWorkerResponse] = {}  # each worker's latest answer

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        return self._loop.run(coro)

    # -- workers ------------------------------------------------------------------------------

    def register(
        self,
        name: str,
        *,
        gpus: int = 0,
        gpu_type: str | None = "T4",
        cpu: int = 8,
        memory_gb: int = 32,
        batch_slots: int = 4,
    ) -> str:
        caps = WorkerCapabilities(
            cpu_cores=cpu,
            memory_gb=memory_gb,
            gpu_count=gpus,
            gpu_type=gpu_type if gpus else None,
            gpus=[GpuDevice(index=i, name=gpu_type or "gpu") for i in range(gpus)],
            hostname=f"{name}.local",
        )
        req = RegisterWorkerRequest(name=name, capabilities=caps, batch_slots=batch_slots)
        self.registered[name] = self.run(self.services.workers.register(worker_key(name), req))
        return name

    def claim(self, worker: str) -> Assignment | None:
        """One claim that does not wait (wait=0): what the worker gets now."""
        return self.run(self.services.claims.claim(worker_key(worker), worker, 0))

    def must_claim(self, worker: str) -> Assignment:
        got = self.claim(worker)
        assert got is not None, f"{worker} got nothing"
        return got

    def report(self, worker: str, a: Assignment, status: str, **kw: Any) -> Task:
        rep = StatusReport(attempt=kw.pop("attempt", a.attempt), node_rank=a.node_rank, status=status, **kw)
        task: Task = self.run(self.services.claims.report(worker_key(worker), a.task.id, rep))
        return task

    def run_to(self, worker: str, a: Assignment, *statuses: str, **kw: Any) -> Task:
        task: Task | None = None
        for status in statuses:
            task = self.report(worker, a, status, **(kw if status in ("completed", "failed") else {}))
        assert task is not None
        return task

    def heartbeat(self, worker: str, *held: Assignment, stopping: bool = False) -> HeartbeatResponse:
        req = HeartbeatRequest(
            active=[ActiveAttempt(task_id=a.task.id, attempt=a.attempt) for a in held], stopping=stopping
        )
        return self.run(self.services.workers.heartbeat(worker_key(worker), worker, req))

    def sweep(self) -> list[str]:
        return self.run(self.services.leases.sweep())

    def drain(self, worker: str) -> None:
        self.run(self.services.workers.drain(ADMIN, worker))

    def active_tasks(self, worker: str) -> list[str]:
        return self.run(self.services.workers.get(worker)).active_tasks

    # -- users --------------------------------------------------------------------------------

    def submit(self, who: Principal = ALICE, name: str = "job", **fields: Any) -> Task:
        return self.run(self.services.tasks.create(who, CreateTaskRequest(job_name=name, **fields)))

    def task(self, task_id: str) -> Task:
        return self.run(self.services.tasks.get(task_id))

    # -- the audit log ------------------------------------------------------------------------

    def audit(self, event_type: AuditEventType, resource: str | None = None) -> list[AuditEventRow]:
        stmt = select(AuditEventRow).where(col(AuditEventRow.event_type) == event_type.value)
        if resource is not None:
            stmt = stmt.where(col(AuditEventRow.resource) == resource)
        with self.services.db.read() as session:
            rows = list(session.scalars(stmt.order_by(col(AuditEventRow.sequence_num))).all())
            session.expunge_all()
            return rows

    def verify_chain(self) -> ChainCheck:
        return self.run(self.services.checkpoints.verify_chain())


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock(T0)


@pytest.fixture(scope="module")
def pg_database(backend: str) -> Iterator[tuple[str, str] | None]:
    """On PostgreSQL, one migrated database per module: (its URL, the TRUNCATE that empties
    it). A new database per test costs most of a second (CREATE DATABASE, then migrations);
    emptying this one costs a few hundredths."""
    if backend != POSTGRESQL:
        yield None
        return
    url = create_database()
    try:
        db = Database(url)
        db.migrate()
        db.dispose()
        tables = [
            str(name)
            for (name,) in pg_exec(
                url, "SELECT tablename FROM pg_tables WHERE schemaname = 'public' ORDER BY tablename"
            )
            if name != "alembic_version"
        ]
        counts = " UNION ALL ".join(f"SELECT '{t}', count(*) FROM \"{t}\"" for t in tables)
        seeded = [t for t, n in pg_exec(url, counts) if n]
        # Emptying between tests would also drop rows the migrations put there.
        assert not seeded, f"migrations seed {seeded}: give each test a fresh database instead"
        yield url, "TRUNCATE " + ", ".join(f'"{t}"' for t in tables) + " RESTART IDENTITY"
    finally:
        drop_database(url)


@pytest.fixture
def database_url(pg_database: tuple[str, str] | None) -> str | None:
    """The test's empty database: None on SQLite (a new file in the test's data dir), the
    module's PostgreSQL database, emptied, otherwise."""
    if pg_database is None:
        return None
    url, truncate = pg_database
    pg_exec(url, truncate)
    return url


@pytest.fixture
def services(database_url: str | None, tmp_path: Path, clock: ManualClock) -> Iterator[Services]:
    settings = Settings(
        data_dir=tmp_path / "data",
        database_url=database_url,
        heartbeat_timeout=LEASE,
        default_max_retries=2,
        sidecars=False,
        local_admin_key=False,
    )
    s = Services(settings, clock=clock)
    s.start()
    try:
        yield s
    finally:
        s.stop()


@pytest.fixture
def kit(services: Services, clock: ManualClock) -> Iterator[Kit]:
    with asyncio.Runner() as loop:
        yield Kit(services, clock, loop)
