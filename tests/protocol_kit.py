"""Playing a worker by hand: the worker protocol driven through FetchmlClient, no runner.

Shared by the server tests of the protocol, logs and artifacts, and by the CLI tests that need
a task with logs or artifacts.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import select
from sqlmodel import col

from fetchml.client import FetchmlClient
from fetchml.core.enums import Role, TaskStatus
from fetchml.core.models import CreateTaskRequest, Task
from fetchml.core.protocol import (
    ActiveAttempt,
    Assignment,
    EndedAttempt,
    GpuDevice,
    HeartbeatResponse,
    RegisterWorkerRequest,
    RegisterWorkerResponse,
    StatusReport,
    WorkerCapabilities,
)
from fetchml.services.keys import bound_worker_name, hash_key
from fetchml.store.db import Database
from fetchml.store.tables import ApiKeyRow
from tests.harness import ServerHandle

NON_TERMINAL = ("queued", "preparing", "running", "collecting")


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def submit(srv: ServerHandle, key: str, name: str = "job", **fields: Any) -> Task:
    with srv.client(key) as c:
        return c.tasks.create(CreateTaskRequest(job_name=name, entrypoint="train.py", **fields))


def get_task(srv: ServerHandle, key: str, task_id: str) -> Task:
    with srv.client(key) as c:
        return c.tasks.get(task_id)


def cancel_leftovers(srv: ServerHandle, admin: str) -> None:
    """Fail every queued task and mark every active one cancelled, so that nothing a test left
    behind is claimed by the next test's worker (a cancelled task whose lease runs out fails
    instead of going back to the queue)."""
    with srv.http(admin) as http:
        for status in NON_TERMINAL:
            page = http.get("/v1/tasks", params={"status": status, "limit": 1000}).json()
            for t in page["tasks"]:
                http.delete(f"/v1/tasks/{t['id']}")


def key_binding(srv: ServerHandle, key: str) -> tuple[str, str, str | None] | None:
    """(user, role, bound worker name) of a key, read from the server's database."""
    db = Database(srv.db_url)
    try:
        with db.read() as session:
            row = session.scalars(select(ApiKeyRow).where(col(ApiKeyRow.key_hash) == hash_key(key))).first()
            return None if row is None else (row.user_id, row.role, bound_worker_name(row))
    finally:
        db.dispose()


@dataclass
class FakeWorker:
    """One worker identity (a name bound to a worker-role key), driven by hand.

    A worker key registers only the name it is bound to. With `bind` (the default), a worker
    key bound to another name is swapped for a new key of the same user bound to this worker's
    name, so several FakeWorkers can be made from one key; `bind=False` keeps the key as given
    (to test what a key may not do)."""

    srv: ServerHandle
    key: str
    name: str = field(default_factory=lambda: unique("w"))
    _client: FetchmlClient | None = None
    bind: bool = True

    def __post_init__(self) -> None:
        if not self.bind:
            return
        info = key_binding(self.srv, self.key)
        if info is not None and info[1] == Role.WORKER.value and info[2] != self.name:
            self.key = self.srv.make_key(info[0], Role.WORKER, worker_name=self.name)

    @property
    def client(self) -> FetchmlClient:
        if self._client is None:
            self._client = self.srv.client(self.key)
        return self._client

    def close(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None

    def register(
        self,
        *,
        cpu_cores: int = 8,
        memory_gb: int = 32,
        gpus: list[int] | None = None,
        gpu_type: str | None = None,
        batch_slots: int = 4,
        service_slots: int = 0,
        **caps: Any,
    ) -> RegisterWorkerResponse:
        devices = [GpuDevice(index=i, name=gpu_type or "gpu", memory_mb=1024) for i in gpus or []]
        req = RegisterWorkerRequest(
            name=self.name,
            capabilities=WorkerCapabilities(
                cpu_cores=cpu_cores,
                memory_gb=memory_gb,
                gpu_count=len(devices),
                gpu_type=gpu_type,
                gpus=devices,
                **caps,
            ),
            batch_slots=batch_slots,
            service_slots=service_slots,
        )
        return self.client.workers.register(req)

    def claim(self, wait: float = 0.0) -> Assignment | None:
        return self.client.workers.claim(self.name, wait=wait)

    def must_claim(self, wait: float = 5.0) -> Assignment:
        a = self.claim(wait)
        assert a is not None, f"worker {self.name} got nothing within {wait}s"
        return a

    def heartbeat(self, *held: Assignment | tuple[str, int]) -> HeartbeatResponse:
        active = [
            ActiveAttempt(task_id=h.task.id, attempt=h.attempt)
            if isinstance(h, Assignment)
            else ActiveAttempt(task_id=h[0], attempt=h[1])
            for h in held
        ]
        return self.client.workers.heartbeat(self.name, active)

    def report(self, a: Assignment, status: str, *, attempt: int | None = None, **kw: Any) -> Task:
        rep = StatusReport(attempt=attempt or a.attempt, status=TaskStatus(status), **kw)
        return self.client.workers.report(a.task.id, rep)

    def end_and_claim(self, a: Assignment, status: str, wait: float = 0.0, **kw: Any) -> Assignment | None:
        """The attempt's last report, sent with the claim for the next task."""
        ended = EndedAttempt(task_id=a.task.id, attempt=a.attempt, status=TaskStatus(status), **kw)
        return self.client.workers.claim(self.name, wait, ended)

    def run_to(self, a: Assignment, *statuses: str, exit_code: int = 0) -> Task:
        """Report each status in turn (e.g. running, collecting, completed)."""
        task = a.task
        for st in statuses:
            kw = {"exit_code": exit_code} if st in ("completed", "failed") else {}
            task = self.report(a, st, **kw)
        return task

    def log(self, a: Assignment, start_line: int, lines: list[str], *, attempt: int | None = None) -> None:
        self.client.logs.append(a.task.id, attempt or a.attempt, start_line, lines)


def enable_plugins(srv: ServerHandle, *names: str) -> None:
    """Enables tracking plugins in remote mode (tasks may name only enabled ones), pointing at a
    loopback port nothing listens on: nothing contacts them unless a test probes their health."""
    admin = srv.make_key(unique("plugins-admin"), "admin")
    settings = {
        "mlflow": {"tracking_uri": "http://127.0.0.1:9/"},
        "tensorboard": {"url": "http://127.0.0.1:9/"},
        "wandb": {"api_key": "test-key", "base_url": "http://127.0.0.1:9/"},
    }
    with srv.http(admin) as http:
        for name in names:
            r = http.put(f"/v1/plugins/{name}/config", json={"mode": "remote", "settings": settings[name]})
            assert r.status_code == 200, r.text


@dataclass
class BoxKeys:
    """An admin (`root`), a user (`alice`), and two worker keys: two machines, box-1 and box-2."""

    admin: str
    user: str
    w1: str
    w2: str


def box_keys(srv: ServerHandle) -> BoxKeys:
    return BoxKeys(
        admin=srv.make_key("root", "admin"),
        user=srv.make_key("alice", "user"),
        w1=srv.make_key("box-1", "worker"),
        w2=srv.make_key("box-2", "worker"),
    )


def registered(srv: ServerHandle, key: str, admin: str, name: str | None = None) -> Iterator[FakeWorker]:
    """For a fixture (`yield from`): a FakeWorker on `key` (named `name`, if given), registered;
    closed afterwards, and what it left queued or running cancelled with `admin`."""
    worker = FakeWorker(srv, key) if name is None else FakeWorker(srv, key, name=name)
    worker.register()
    yield worker
    worker.close()
    cancel_leftovers(srv, admin)


def box_one(srv: ServerHandle, ks: BoxKeys) -> Iterator[FakeWorker]:
    """box-1, under the name its key is bound to (raw requests name it): see `registered`."""
    yield from registered(srv, ks.w1, ks.admin, name="box-1")
