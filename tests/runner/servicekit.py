"""Shared by the service tests of the runner: a stand-in for the server's half of the service
protocol and a Worker wired to it (its executor real)."""

from __future__ import annotations

import queue
import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import psutil

from fetchml.client.api import FetchmlClient
from fetchml.core.errors import ConflictError
from fetchml.core.jupyter import ServiceAssignment, ServiceClaimResponse, ServiceReport, proxy_path
from fetchml.runner.executors.local import LABEL_TASK
from fetchml.runner.worker import Worker, WorkerConfig
from tests.harness import free_port, wait_for


class ServerHalf:
    """The server's side of the protocol, as far as the worker sees it."""

    def __init__(self) -> None:
        self.commands: queue.Queue[ServiceClaimResponse] = queue.Queue()
        self.reports: list[tuple[str, ServiceReport]] = []
        self.running_seen: list[list[str]] = []
        self.gone: set[str] = set()
        self._lock = threading.Lock()

    def claim(
        self, worker_id: str, running: list[str], wait: float, stopping: list[str] | None = None
    ) -> ServiceClaimResponse:
        self.running_seen.append(list(running))
        try:
            return self.commands.get(timeout=min(wait, 0.2))
        except queue.Empty:
            return ServiceClaimResponse()

    def report(self, worker_id: str, service_id: str, report: ServiceReport) -> None:
        if service_id in self.gone:
            raise ConflictError(f"service {service_id} is no longer live")
        with self._lock:
            self.reports.append((service_id, report))

    def of(self, sid: str) -> list[ServiceReport]:
        with self._lock:
            return [r for s, r in self.reports if s == sid]

    def wait_report(self, sid: str, status: str, timeout: float = 60) -> ServiceReport:
        return wait_for(
            lambda: next((r for r in self.of(sid) if r.status == status), None),
            timeout,
            f"a {status} report for {sid}: {self.of(sid)}",
        )




def labelled(sid: str) -> list[psutil.Process]:
    """Live processes carrying the service's label (the server and its kernels)."""
    found = []
    for p in psutil.process_iter():
        try:
            if p.environ().get(LABEL_TASK) == sid and p.status() != psutil.STATUS_ZOMBIE:
                found.append(p)
        except psutil.Error:
            continue
    return found


def assignment(token: str | None = None, **kw: Any) -> ServiceAssignment:
    sid = kw.pop("id", "svc-" + uuid.uuid4().hex[:16])
    fields: dict[str, Any] = {
        "id": sid,
        "name": "nb",
        "user_id": "alice",
        "workspace": "proj",
        "image": "unused",
        "token": token or uuid.uuid4().hex,
        "base_url": proxy_path(sid),
    }
    fields.update(kw)
    return ServiceAssignment(**fields)


def port_range(n: int = 10) -> tuple[int, int]:
    """n consecutive ports nobody listens on now (bounded search)."""
    for _ in range(50):
        first = free_port()
        if first + n > 65535:
            continue
        if all(free(p) for p in range(first, first + n)):
            return first, first + n - 1
    raise AssertionError("no free port range")


def free(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


@contextmanager
def worker_factory(tmp_path: Path, **defaults: Any) -> Iterator[Callable[..., tuple[Worker, ServerHalf]]]:
    """Workers (registered in name only) whose service half talks to a ServerHalf; each is shut
    down as the worker shuts down on exit."""
    made: list[Worker] = []

    def make(**cfg_kw: Any) -> tuple[Worker, ServerHalf]:
        fields: dict[str, Any] = {
            "name": "svc-" + uuid.uuid4().hex[:8],
            "work_dir": tmp_path / f"work-{len(made)}",
            "stop_grace": 3.0,
            "service_ports": port_range(),
            "service_start_timeout": 60.0,
            "service_probe_interval": 0.5,
            **defaults,
        }
        fields.update(cfg_kw)
        w = Worker(WorkerConfig(**fields), FetchmlClient("http://127.0.0.1:9", "unused"))
        half = ServerHalf()
        w.client = type("Stub", (), {"jupyter_workers": half})()  # type: ignore[assignment]
        w.server_id = "srv-" + uuid.uuid4().hex[:8]
        w.claim_wait = 1.0
        w.services.start()
        made.append(w)
        return w, half

    try:
        yield make
    finally:
        for w in made:
            w._report_until = time.monotonic() + 5
            w.services.begin_shutdown(0.5)
            w.executor.shutdown(0.5)
            w.services.join(20)
