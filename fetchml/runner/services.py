"""Jupyter services on a worker: the service half of the worker protocol.

One thread (`fetchml-services`) long-polls the server for services to start and stop, telling
it which ones this worker runs. Each service has a thread of its own that:

- makes its workspace folder, <work dir>/jupyter/<user>/<workspace> (kept across services; the
  task user's when the local executor runs tasks as another user), and takes a free host port
  of the worker's range;
- starts a Jupyter server through the worker's executor, like an attempt of a task (same
  process group and run-as rules, labels, watchdog and orphan cleanup), with the token in its
  environment;
- probes <base_url>api/status with the token every 0.2 s until it answers 200 (reported
  `running` with its URL), the process exits or the start timeout passes (reported `error`
  with the last output lines, the token replaced by "***");
- then probes every few seconds and reports `running` again with Jupyter's last_activity (the
  server's idle cull reads it); an exit is reported `error` with its reason;
- on a stop (the server's command, the worker stopping or registering again) stops it, kills
  what the server left behind (kernels run in sessions of their own, outside its process
  group), and reports `stopped`.

A report answered 409, 403 or 404 means the server no longer counts the service as live: it is
stopped without another report.

The claim loop and what the worker calls are here (`ServiceManager`); one service's life is
fetchml.runner.service_run.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING

from fetchml.core.errors import FetchmlError
from fetchml.core.jupyter import ServiceAssignment, ServiceReport
from fetchml.runner.jupyter import JUPYTER_MISSING, PortPool, jupyter_importable, make_folder
from fetchml.runner.retry import REPORT_BACKOFF, TRANSIENT
from fetchml.runner.service_run import (
    GONE,
    START_PROBE_INTERVAL,
    Outcome,
    ServiceRunMixin,
    _Service,
)

if TYPE_CHECKING:
    from fetchml.runner.worker import Worker

__all__ = [
    "CLAIM_BACKOFF_MAX",
    "GONE",
    "REPORT_BACKOFF",
    "START_PROBE_INTERVAL",
    "TRANSIENT",
    "Outcome",
    "ServiceManager",
    "_Service",
]

log = logging.getLogger("fetchml.runner.services")

CLAIM_BACKOFF_MAX = 30.0


class ServiceManager(ServiceRunMixin):
    """Owned by a Worker: see the module docstring."""

    def __init__(self, worker: Worker) -> None:
        self.w = worker
        cfg = worker.cfg
        self.ports = PortPool(cfg.service_ports[0], cfg.service_ports[1], cfg.service_bind)
        self.docker = worker.executor.name == "docker"
        self.unavailable: str | None = None
        if not self.docker and cfg.service_slots > 0 and not jupyter_importable(cfg.python):
            self.unavailable = JUPYTER_MISSING.format(python=cfg.python)
            log.warning("%s; registering with no service slots", self.unavailable)
        self._services: dict[str, _Service] = {}
        self._lock = threading.Lock()
        self._closed = False
        self._stopped = threading.Event()
        self._thread: threading.Thread | None = None
        self.root = self._make_root()

    @property
    def slots(self) -> int:
        return 0 if self.unavailable else max(0, self.w.cfg.service_slots)

    def _make_root(self) -> Path:
        w = self.w
        owner = w.task_owner
        if w.workspaces_dir.parent == w.cfg.work_dir:
            root = w.cfg.work_dir / "jupyter"
        else:  # a temp folder of this run: the work dir is out of the task user's reach
            root = w.workspaces_dir / "jupyter"
            log.warning("Jupyter workspaces are in %s and are not kept across worker restarts", root)
        make_folder(root, 0o711 if owner else 0o700)
        make_folder(root / ".runtime", 0o711 if owner else 0o700)
        return root

    # -- what the worker calls ------------------------------------------------------------------

    def start(self) -> None:
        if self.w.cfg.service_slots <= 0:
            # Told to run no services: none is placed here and a registration holds none, so no
            # long poll (the server answers one with a write at every task end: freed capacity
            # wakes service claims). A worker whose slots are 0 for want of Jupyter still asks,
            # to refuse a start it is sent anyway.
            return
        self._thread = threading.Thread(target=self._claim_loop, name="fetchml-services", daemon=True)
        self._thread.start()

    def live_keys(self) -> set[tuple[str, int]]:
        """(service id, 1) of every service held: what orphan cleanup must leave alone."""
        with self._lock:
            return {(sid, 1) for sid in self._services}

    def on_register(self) -> None:
        """Registered (again): services of an earlier registration are no longer the server's."""
        with self._lock:
            held = list(self._services.values())
        for svc in held:
            svc.request_stop("the worker registered again")

    def begin_shutdown(self, grace: float, reason: str = "the worker stopped") -> None:
        self._stopped.set()
        with self._lock:
            self._closed = True
            held = list(self._services.values())
        for svc in held:
            svc.request_stop(reason, grace)

    def join(self, timeout: float) -> None:
        end = time.monotonic() + timeout
        with self._lock:
            threads = [s.thread for s in self._services.values() if s.thread is not None]
        for t in threads:
            t.join(max(0.0, end - time.monotonic()))
        if self._thread is not None:
            self._thread.join(max(0.0, min(1.0, end - time.monotonic())))

    # -- claiming ---------------------------------------------------------------------------------

    def _claim_loop(self) -> None:
        delay = 1.0
        while not self._stopped.is_set():
            with self._lock:
                running = list(self._services)
                stopping = [sid for sid, svc in self._services.items() if svc.stop.is_set()]
            try:
                resp = self.w.client.jupyter_workers.claim(
                    self.w.worker_id, running, wait=min(self.w.claim_wait, 5.0), stopping=stopping
                )
            except FetchmlError as exc:
                if self._stopped.is_set():
                    return
                log.warning("service claim failed: %s; retrying in %gs", exc.message, delay)
                self._stopped.wait(delay)
                delay = min(delay * 2, CLAIM_BACKOFF_MAX)
                continue
            delay = 1.0
            for a in resp.start:
                self._start(a)
            news = [self._stop_one(sid) for sid in resp.stop]
            if resp.stop and not resp.start and not any(news):
                # Only services already stopping (a server that ignores `stopping`): it would
                # answer the next ask at once, so that one waits a little.
                self._stopped.wait(0.5)

    def _start(self, a: ServiceAssignment) -> None:
        svc = _Service(a)
        with self._lock:
            if a.id in self._services:
                return
            self._services[a.id] = svc
            closed = self._closed
        if closed or self.w.stopping.is_set():
            svc.request_stop("the worker is stopping", 0.0)
        svc.thread = threading.Thread(
            target=self._run, args=(svc,), name=f"fetchml-service-{a.id[:12]}", daemon=True
        )
        svc.thread.start()

    def _stop_one(self, sid: str) -> bool:
        """Whether this was news (not a service already being stopped)."""
        with self._lock:
            svc = self._services.get(sid)
        if svc is not None:
            if svc.stop.is_set():
                return False
            log.info("stopping service %s", sid)
            svc.request_stop(None)
            return True
        # Not (or no longer) here: say so once, so the server need not wait for it.
        with contextlib.suppress(FetchmlError):
            self.w.client.jupyter_workers.report(self.w.worker_id, sid, ServiceReport(status="stopped"))
        return True
