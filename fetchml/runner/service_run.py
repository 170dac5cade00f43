"""One Jupyter service on a worker, from its workspace and port to its last report: started
through the worker's executor, probed until it answers, reported `running` while it lives,
stopped and torn down (kernels it left included). The claim loop that starts and stops services
is fetchml.runner.services."""

from __future__ import annotations

import contextlib
import logging
import shutil
import threading
import time
from collections import deque
from pathlib import Path
from typing import TYPE_CHECKING, Literal

import psutil

from fetchml.core.errors import (
    ConflictError,
    FetchmlError,
    ForbiddenError,
    NotFoundError,
)
from fetchml.core.jupyter import MAX_LOG_TAIL, MAX_LOG_TAIL_CHARS, ServiceAssignment, ServiceReport
from fetchml.runner.executors.base import ExecSpec, Execution, ExecutorError
from fetchml.runner.jupyter import (
    CONTAINER_PORT,
    CONTAINER_RUNTIME_DIR,
    PortPool,
    Probe,
    check_name,
    last_activity,
    make_folder,
    redact,
    server_command,
    server_env,
    service_url,
)
from fetchml.runner.retry import REPORT_BACKOFF, TRANSIENT

if TYPE_CHECKING:
    from fetchml.runner.worker import Worker

log = logging.getLogger("fetchml.runner.services")

GONE = (ConflictError, ForbiddenError, NotFoundError)
START_PROBE_INTERVAL = 0.2
Outcome = tuple[Literal["stopped", "error"], str | None]


class _Service:
    def __init__(self, assignment: ServiceAssignment) -> None:
        self.a = assignment
        self.stop = threading.Event()
        self.lock = threading.Lock()
        self.reason: str | None = None  # why the worker stopped it itself (None: the server asked)
        self.grace: float | None = None
        self.execution: Execution | None = None
        self.reader: threading.Thread | None = None
        self.port: int | None = None
        self.runtime: Path | None = None
        self.gone = False  # the server no longer counts it live: no more reports
        self.tail: deque[str] = deque(maxlen=MAX_LOG_TAIL)
        self.children: dict[int, psutil.Process] = {}
        self.thread: threading.Thread | None = None

    def request_stop(self, reason: str | None, grace: float | None = None) -> None:
        with self.lock:
            if not self.stop.is_set():
                self.reason = reason
            if grace is not None:
                self.grace = grace if self.grace is None else min(self.grace, grace)
        self.stop.set()


class ServiceRunMixin:
    """One service's life, the half of ServiceManager (fetchml.runner.services) that runs in
    each service's own thread."""

    w: Worker
    ports: PortPool
    docker: bool
    unavailable: str | None
    root: Path
    _services: dict[str, _Service]
    _lock: threading.Lock

    def _run(self, svc: _Service) -> None:
        outcome: Outcome | None
        try:
            outcome = self._serve(svc)
        except Exception as exc:  # never let one service take the worker down
            log.exception("service %s failed in the worker", svc.a.id)
            outcome = ("error", f"worker error: {exc}")
        finally:
            with contextlib.suppress(Exception):
                self._teardown(svc)
        try:
            if outcome is not None and not svc.gone:
                status, text = outcome
                tail = list(svc.tail) if status == "error" else []
                report = ServiceReport(status=status, error=text[:4096] if text else None, log_tail=tail)
                if self._report(svc, report, retry=True) == "ok":
                    log.info("service %s: reported %s%s", svc.a.id, status, f" ({text})" if text else "")
        finally:
            with self._lock:
                self._services.pop(svc.a.id, None)

    def _serve(self, svc: _Service) -> Outcome | None:
        """Run the service until it stops or fails; its final report (None: none is due)."""
        a = svc.a
        if self.unavailable:
            return ("error", self.unavailable)
        if svc.stop.is_set():
            return ("stopped", svc.reason)
        try:
            spec = self._spec(svc)
        except (OSError, ValueError) as exc:
            return ("error", f"cannot prepare the service's workspace: {exc}")
        if spec is None:
            first, last = self.ports.first, self.ports.last
            return ("error", f"no free port in this worker's service range {first}-{last}")
        try:
            execution = self.w.executor.start(spec)
        except ExecutorError as exc:
            return ("error", str(exc))
        svc.execution = execution
        svc.reader = threading.Thread(
            target=self._read, args=(svc, execution), name=f"fetchml-svclog-{a.id[:12]}", daemon=True
        )
        svc.reader.start()
        assert svc.port is not None
        cfg = self.w.cfg
        probe = Probe(cfg.service_bind, svc.port, a.base_url, a.token)
        try:
            return self._watch(svc, execution, probe)
        finally:
            probe.close()

    def _watch(self, svc: _Service, execution: Execution, probe: Probe) -> Outcome | None:
        a, cfg = svc.a, self.w.cfg
        started = time.monotonic()
        while True:
            if svc.stop.wait(START_PROBE_INTERVAL):
                return ("stopped", svc.reason)
            ended = execution.wait(0)
            if ended is not None:
                return ("error", f"Jupyter exited before it answered: {ended.error or 'exit code 0'}")
            status = probe.status()
            if status is not None:
                break
            if time.monotonic() - started > cfg.service_start_timeout:
                return ("error", f"Jupyter did not answer within {cfg.service_start_timeout:g}s")
        log.info("service %s answers after %.1fs", a.id, time.monotonic() - started)
        url: str | None = service_url(cfg.service_host, svc.port or 0, a.base_url)
        while True:
            self._track_children(svc, execution)
            report = ServiceReport(status="running", url=url, last_activity=last_activity(status))
            # The first running report is retried; renewals are not (the next one comes soon).
            sent = self._report(svc, report, retry=url is not None)
            if sent == "gone":
                return None
            if sent == "ok":
                url = None  # carried until the server had it once
            if svc.stop.wait(cfg.service_probe_interval):
                return ("stopped", svc.reason)
            ended = execution.wait(0)
            if ended is not None:
                return ("error", f"Jupyter exited: {ended.error or 'exit code 0'}")
            status = probe.status()

    def _spec(self, svc: _Service) -> ExecSpec | None:
        a, cfg, owner = svc.a, self.w.cfg, self.w.task_owner
        user_dir = make_folder(self.root / check_name("user id", a.user_id), 0o711 if owner else 0o700)
        ws = make_folder(user_dir / check_name("workspace", a.workspace), 0o700, owner)
        port = self.ports.take()
        if port is None:
            return None
        svc.port = port
        ports: tuple[tuple[int, int], ...] = ()
        if self.docker:
            from fetchml.runner.executors.docker import CONTAINER_WORKSPACE

            host_net = getattr(self.w.executor, "network", "") == "host"
            inner = port if host_net else CONTAINER_PORT
            ip = cfg.service_bind if host_net else "0.0.0.0"
            command = server_command(
                python="python3", port=inner, ip=ip, base_url=a.base_url, root_dir=CONTAINER_WORKSPACE
            )
            env = server_env(ws, CONTAINER_RUNTIME_DIR, a.token, a.id)
            ports = ((port, inner),)
        else:
            svc.runtime = make_folder(self.root / ".runtime" / a.id, 0o700, owner)
            command = server_command(
                python=cfg.python, port=port, ip=cfg.service_bind, base_url=a.base_url, root_dir=str(ws)
            )
            env = server_env(ws, str(svc.runtime), a.token, a.id)
        return ExecSpec(
            task_id=a.id,
            attempt=1,
            worker_id=self.w.worker_id,
            command=command,
            workspace=ws,
            workdir=ws,
            env=env,
            image=a.image,
            cpu=a.cpu or None,
            memory_gb=a.memory_gb or None,
            gpus=tuple(a.gpus),
            server_id=self.w.server_id,
            ports=ports,
            bind_host=cfg.service_bind,
        )

    def _read(self, svc: _Service, execution: Execution) -> None:
        token = svc.a.token
        try:
            for line in execution.lines():
                kept = redact(line, token)[:MAX_LOG_TAIL_CHARS]
                svc.tail.append(kept)
                log.debug("service %s: %s", svc.a.id, kept)
        except Exception as exc:  # the tail is a courtesy; the service goes on without it
            log.debug("service %s: output reader ended: %s", svc.a.id, exc)

    def _track_children(self, svc: _Service, execution: Execution) -> None:
        """Remember the server's descendants (kernels among them), to kill any that outlive it."""
        pid = getattr(execution, "pid", None)
        if pid is None:
            return
        with contextlib.suppress(psutil.Error):
            for p in psutil.Process(pid).children(recursive=True):
                svc.children.setdefault(p.pid, p)

    def _teardown(self, svc: _Service) -> None:
        execution = svc.execution
        if execution is not None:
            grace = svc.grace if svc.grace is not None else self.w.cfg.stop_grace
            self._track_children(svc, execution)
            execution.stop(grace)
            execution.wait(grace + 10)
            # psutil checks each process's start time: a reused pid is never killed.
            left = [p for p in svc.children.values() if p.is_running()]
            for p in left:
                with contextlib.suppress(psutil.Error):
                    p.kill()
            if left:
                psutil.wait_procs(left, timeout=5)
            if svc.reader is not None:
                svc.reader.join(5.0)
            execution.cleanup()
        if svc.runtime is not None:
            shutil.rmtree(svc.runtime, ignore_errors=True)
        if svc.port is not None:
            self.ports.release(svc.port)

    def _report(
        self, svc: _Service, report: ServiceReport, *, retry: bool
    ) -> Literal["ok", "gone", "failed"]:
        sid = svc.a.id
        tries = 0
        while True:
            try:
                self.w.client.jupyter_workers.report(self.w.worker_id, sid, report)
                return "ok"
            except GONE as exc:
                log.info("service %s: %s; the server no longer counts it, stopping it", sid, exc.message)
                svc.gone = True
                svc.request_stop(None)
                return "gone"
            except TRANSIENT as exc:
                why = self.w._report_gives_up() if retry else "not retried"
                if why is not None:
                    log.warning("service %s: %s report failed (%s): %s", sid, report.status, exc.message, why)
                    return "failed"
                delay = REPORT_BACKOFF[min(tries, len(REPORT_BACKOFF) - 1)]
                tries += 1
                if self.w._give_up.wait(delay):
                    return "failed"
            except FetchmlError as exc:
                log.warning("service %s: %s report refused: %s", sid, report.status, exc.message)
                return "failed"
