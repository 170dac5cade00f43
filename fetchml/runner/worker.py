"""The worker: registers, heartbeats, long-polls for assignments and runs each attempt.

It talks to the server only through fetchml.client. One thread claims, one heartbeats, one
watches the lease, and each running attempt has its own thread (plus a log shipper). Jupyter
services have a claim thread and a thread each of their own (fetchml.runner.services).

Faults (see docs/operations.md):

- Server down at start: registration is retried with backoff (0.5 s doubling to 30 s, each
  attempt logged) until it answers, `connect_timeout` passes or the worker is stopped; a
  refused key (401/403) ends the worker at once.
- A graceful stop (`request_stop`, SIGTERM/SIGINT): no new claims from that moment (the next
  heartbeat, sent at once, tells the server, which drains the worker); heartbeats go on;
  running tasks may finish within `stop_grace` seconds; then they are stopped (SIGTERM, SIGKILL
  after another `stop_grace`) and reported *interrupted*: the server requeues them at once
  without spending a retry. The worker exits once they are reported. A second signal ends the
  grace at once; a third stops retrying reports.
- Reports are retried until the server answers them, or until the worker has had no successful
  heartbeat for two heartbeat timeouts (its lease, plus the one timeout of grace a restarted
  server gives): by then the attempt has been requeued.
- No successful heartbeat for longer than the heartbeat timeout the server announced: the
  lease is lost, so running tasks are stopped (no attempt outlives its lease by more than
  `stop_grace`) and reported interrupted if the server answers again.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import stat
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fetchml.client.api import FetchmlClient
from fetchml.client.base import ServerUnreachableError
from fetchml.core.enums import TaskStatus, WorkerStatus
from fetchml.core.errors import (
    ConflictError,
    FetchmlError,
    ForbiddenError,
    InternalError,
    NotFoundError,
    RateLimitedError,
    ServiceUnavailableError,
    UnauthorizedError,
)
from fetchml.core.lifecycle import TIME_LIMIT_ERROR
from fetchml.core.protocol import (
    ActiveAttempt,
    Assignment,
    RegisterWorkerRequest,
    StatusReport,
    WorkerCapabilities,
)
from fetchml.runner import trackers
from fetchml.runner.capabilities import detect_capabilities
from fetchml.runner.collect import NO_OUTPUTS, find_outputs, upload_outputs, with_skipped_note
from fetchml.runner.datasets import DEFAULT_MAX_DATASET_BYTES, DatasetCache, DatasetError, DatasetPolicy
from fetchml.runner.entrypoint import build_command
from fetchml.runner.executors.base import ExecSpec, Execution, Executor, ExecutorError
from fetchml.runner.gpus import GpuProvider, NvmlGpuProvider, StaticGpuProvider
from fetchml.runner.logship import LogShipper
from fetchml.runner.services import ServiceManager
from fetchml.runner.timelimit import TimeLimit
from fetchml.runner.workspace import SnapshotCache, WorkspaceError, prepare_workspace

log = logging.getLogger("fetchml.runner")

# Answers to registration and reports that a later try may not get: the server is down, busy or
# behind a proxy that failed.
TRANSIENT = (ServerUnreachableError, ServiceUnavailableError, InternalError, RateLimitedError)
REGISTER_BACKOFF_START = 0.5
REGISTER_BACKOFF_MAX = 30.0
REPORT_BACKOFF = (0.5, 1.0, 2.0, 4.0, 5.0)


@dataclass
class WorkerConfig:
    name: str
    work_dir: Path
    executor: str = "auto"  # auto | docker | local
    batch_slots: int | None = None  # default: one per GPU, at least 1
    gpus: int | None = None  # with gpu_type: override NVML detection (like Slurm's gres.conf)
    gpu_type: str | None = None
    default_image: str | None = None
    # Seconds between SIGTERM and SIGKILL when a task is stopped, and how long running tasks may
    # go on finishing after the worker is asked to stop (SIGTERM) before they are stopped.
    stop_grace: float = 10.0
    # Give up registering after this many seconds of an unreachable server (None: never).
    connect_timeout: float | None = None
    keep_workspaces: bool = False
    python: str = field(default_factory=lambda: sys.executable)
    # Local executor only: the unprivileged user tasks run as (the worker must be root), and
    # names of the worker's environment variables that tasks may see besides the allow-list.
    run_as: str | None = None
    pass_env: tuple[str, ...] = ()
    # Docker executor only: container limits and network (see DockerExecutor). Memory / CPUs for
    # tasks that ask for none: None is an equal share of the host per batch slot, 0 no limit.
    pids_limit: int = 4096
    default_memory_gb: float | None = None
    default_cpus: float | None = None
    network: str = "bridge"
    # Datasets (see fetchml.runner.datasets): local sources only under these folders (none:
    # no local sources), URLs to non-public addresses only when allowed, and a size cap.
    dataset_roots: tuple[Path, ...] = ()
    allow_private_datasets: bool = False
    max_dataset_bytes: int = DEFAULT_MAX_DATASET_BYTES
    # Jupyter services (fetchml.runner.services): how many at once, the host ports they take,
    # the address put in their URLs, the address a local server binds (docker publishes its port
    # there), how long one may take to answer, and how often a running one is probed.
    service_slots: int = 1
    service_ports: tuple[int, int] = (8900, 8999)
    service_host: str = "127.0.0.1"
    service_bind: str = "127.0.0.1"
    service_start_timeout: float = 120.0
    service_probe_interval: float = 5.0


def make_executor(
    kind: str,
    *,
    default_image: str | None,
    stop_grace: float,
    docker: dict[str, Any] | None = None,
    run_as: str | None = None,
    pass_env: tuple[str, ...] = (),
) -> Executor:
    """`docker`: DockerExecutor's keyword options (pids_limit, default_memory_gb, ...).
    `run_as`, `pass_env`: the local executor's (see LocalExecutor)."""
    if kind == "auto":
        from fetchml.runner.executors.docker import docker_available

        kind = "docker" if docker_available() else "local"
    if run_as is not None and kind != "local":
        raise ValueError(f"--run-as applies to the local executor only (this worker uses {kind})")
    if kind == "docker":
        from fetchml.runner.executors.docker import DockerExecutor

        return DockerExecutor(default_image=default_image, stop_grace=stop_grace, **(docker or {}))
    if kind == "local":
        from fetchml.runner.executors.local import LocalExecutor

        return LocalExecutor(stop_grace=stop_grace, run_as=run_as, pass_env=pass_env)
    raise ValueError(f"unknown executor {kind!r}: use auto, docker or local")


def _reachable_by_others(path: Path) -> bool:
    """Whether any user may traverse every folder down to `path` (o+x all the way)."""
    return all(folder.stat().st_mode & stat.S_IXOTH for folder in (path, *path.parents))


def prepare_work_dir(work_dir: Path, name: str, task_owner: tuple[int, int] | None) -> Path:
    """Create the work dir, readable by the worker's user only, and return where attempt
    workspaces go.

    Tasks run as the worker's user: in work_dir/workspaces. Tasks run as another user
    (task_owner): they must reach their own workspace, and nothing else. When every folder down
    to work_dir is traversable by others, work_dir becomes 0711 (entered, never listed), its
    caches stay 0700 and work_dir/workspaces is 0711; otherwise (a work dir under /root or the
    0700 data dir) workspaces go to a fresh 0711 folder in the temp dir ($TMPDIR).
    """
    work_dir.mkdir(parents=True, exist_ok=True)
    if work_dir.stat().st_mode & stat.S_ISVTX:  # /tmp and the like: shared, never ours to close
        raise ValueError(f"work dir {work_dir} is a shared folder (sticky bit): name a folder of its own")
    os.chmod(work_dir, 0o700)
    for cache in ("snapshots", "datasets"):
        (work_dir / cache).mkdir(mode=0o700, exist_ok=True)
        os.chmod(work_dir / cache, 0o700)
    if task_owner is None:
        return work_dir / "workspaces"
    if _reachable_by_others(work_dir.parent):
        os.chmod(work_dir, 0o711)
        workspaces = work_dir / "workspaces"
        workspaces.mkdir(exist_ok=True)
    else:
        safe = "".join(c if c.isalnum() or c in "-_" else "_" for c in name)[:40]
        workspaces = Path(tempfile.mkdtemp(prefix=f"fetchml-{safe}-workspaces-"))
        log.info(
            "tasks run as another user: workspaces in %s (%s is not reachable by it)", workspaces, work_dir
        )
    os.chmod(workspaces, 0o711)
    return workspaces


def gpu_provider_for(cfg: WorkerConfig) -> GpuProvider:
    if cfg.gpus is not None:
        return StaticGpuProvider(cfg.gpus, cfg.gpu_type or "gpu")
    return NvmlGpuProvider()


class _Attempt:
    def __init__(self, assignment: Assignment) -> None:
        self.assignment = assignment
        self.execution: Execution | None = None
        self.shipper: LogShipper | None = None
        self.cancelled = threading.Event()
        # Why the worker stopped this attempt itself (it is reported interrupted, not failed).
        self.interrupted: str | None = None
        self.lock = threading.Lock()

    @property
    def key(self) -> tuple[str, int]:
        return (self.assignment.task.id, self.assignment.attempt)

    def interrupt(self, reason: str, grace: float) -> None:
        """Stop the attempt because the worker stops or lost its lease: its log is kept and it
        is reported interrupted (requeued without spending a retry)."""
        with self.lock:
            if self.interrupted is None and not self.cancelled.is_set():
                self.interrupted = reason
            execution = self.execution
        self.cancelled.set()
        if execution is not None:
            execution.stop(grace)

    def cancel(self, grace: float) -> None:
        self.cancelled.set()
        with self.lock:
            execution = self.execution
            shipper = self.shipper
        if shipper is not None:  # lines printed after a cancel are not needed
            shipper.cancel()
        if execution is not None:
            execution.stop(grace)


class Worker:
    def __init__(
        self,
        cfg: WorkerConfig,
        client: FetchmlClient,
        *,
        executor: Executor | None = None,
        gpu_provider: GpuProvider | None = None,
    ) -> None:
        self.cfg = cfg
        self.client = client
        self.executor = executor or make_executor(
            cfg.executor,
            default_image=cfg.default_image,
            stop_grace=cfg.stop_grace,
            docker={
                "pids_limit": cfg.pids_limit,
                "default_memory_gb": cfg.default_memory_gb,
                "default_cpus": cfg.default_cpus,
                "network": cfg.network,
            },
            run_as=cfg.run_as,
            pass_env=cfg.pass_env,
        )
        self.gpu_provider = gpu_provider or gpu_provider_for(cfg)
        self.worker_id = cfg.name
        self.server_id: str | None = None
        self.stop_event = threading.Event()
        # request_stop(): a graceful stop is under way (no claims; running tasks get a grace).
        self.stopping = threading.Event()
        self._stop_requests = 0
        self._drain_deadline = 0.0
        self._hurry = threading.Event()  # a second stop request: no more grace
        self._give_up = threading.Event()  # a third: stop retrying reports
        self._hb_wake = threading.Event()
        self._report_until: float | None = None  # set when the worker exits: reports stop then
        self._attempts: dict[tuple[str, int], _Attempt] = {}
        self._lock = threading.Lock()
        self._slot_freed = threading.Event()
        self._draining = False
        # Run as another user, tasks must reach their workspace but nothing else of the worker's.
        self.task_owner: tuple[int, int] | None = getattr(self.executor, "task_owner", None)
        self.workspaces_dir = prepare_work_dir(cfg.work_dir, cfg.name, self.task_owner)
        self.snapshots = SnapshotCache(cfg.work_dir / "snapshots", client)
        self.datasets = DatasetCache(
            cfg.work_dir / "datasets",
            DatasetPolicy(
                roots=tuple(cfg.dataset_roots),
                allow_private=cfg.allow_private_datasets,
                max_bytes=cfg.max_dataset_bytes,
            ),
        )
        self.heartbeat_interval = 2.0
        self.heartbeat_timeout = 30.0
        self._last_contact = time.monotonic()  # the last successful heartbeat (or registration)
        self._lease_lost = False
        self.claim_wait = 20.0
        self.slots = 1
        self.registered = threading.Event()  # set once the first registration succeeded or failed
        self.registration_error: str | None = None
        self.services = ServiceManager(self)

    # -- lifecycle ----------------------------------------------------------------------------

    def register(self) -> None:
        caps: dict[str, Any] = detect_capabilities(self.gpu_provider, self.executor.name)
        slots = self.cfg.batch_slots or max(1, int(caps["gpu_count"]))
        resp = self.client.workers.register(
            RegisterWorkerRequest(
                name=self.cfg.name,
                capabilities=WorkerCapabilities.model_validate(caps),
                batch_slots=slots,
                service_slots=self.services.slots,
            )
        )
        self.worker_id = resp.worker_id
        self.server_id = resp.server_id
        self.heartbeat_interval = resp.heartbeat_interval
        self.heartbeat_timeout = resp.heartbeat_timeout
        self.claim_wait = resp.claim_wait
        self._last_contact = time.monotonic()
        self._lease_lost = False
        self.slots = slots
        set_slots = getattr(self.executor, "set_slots", None)
        if set_slots is not None:  # docker: default limits are a share of the host per slot
            set_slots(slots)
        with self._lock:
            live = set(self._attempts)
        # Services of an earlier registration are stopped by their own threads, not here.
        live |= self.services.live_keys()
        self.services.on_register()
        # Only what this worker name started for this server: another server's worker of the
        # same name on this host keeps its tasks.
        removed = self.executor.remove_orphans(self.worker_id, live, self.server_id)
        if removed:
            log.warning(
                "removed %d orphaned execution(s) of an earlier run: %s", len(removed), ", ".join(removed)
            )
        log.info(
            "worker %s registered: %s executor, %d slot(s), %d GPU(s)",
            self.worker_id,
            self.executor.name,
            slots,
            caps["gpu_count"],
        )

    def register_until_up(self) -> bool:
        """Register, retrying with backoff while the server cannot be reached or is unavailable.
        False when the worker was stopped first. Raises at once for a refused key (401/403) or
        any other definite answer, and once `connect_timeout` has passed."""
        delay = REGISTER_BACKOFF_START
        started = time.monotonic()
        tries = 0
        while True:
            tries += 1
            try:
                self.register()
                return True
            except (UnauthorizedError, ForbiddenError):
                raise
            except TRANSIENT as exc:
                waited = time.monotonic() - started
                limit = self.cfg.connect_timeout
                if limit is not None and waited + delay > limit:
                    raise ServerUnreachableError(
                        f"gave up registering after {waited:.0f}s (--connect-timeout {limit:g}): {exc.message}"
                    ) from exc
                log.warning(
                    "cannot register with the server (attempt %d): %s; retrying in %.1fs",
                    tries,
                    exc.message,
                    delay,
                )
            if self.stop_event.wait(delay) or self.stopping.is_set():
                log.info("stopped before the server could be reached")
                return False
            delay = min(delay * 2, REGISTER_BACKOFF_MAX)

    def run(self) -> None:
        """Serve until stop() or request_stop() (or an operator's drain completes)."""
        try:
            if not self.register_until_up():
                return
        except Exception as exc:
            self.registration_error = str(exc)
            raise
        finally:
            self.registered.set()
        hb = threading.Thread(target=self._heartbeat_loop, name="fetchml-heartbeat", daemon=True)
        hb.start()
        watch = threading.Thread(target=self._lease_watch, name="fetchml-lease", daemon=True)
        watch.start()
        self.services.start()
        try:
            self._claim_loop()
            if self.stopping.is_set() and not self.stop_event.is_set():
                self._drain()
        finally:
            # Whatever still runs (a hard stop()) is interrupted, not failed: reported as such
            # for a few seconds while the executor stops it.
            self._report_until = time.monotonic() + 10.0
            with self._lock:
                left = list(self._attempts.values())
            for a in left:
                with a.lock:
                    if a.interrupted is None and not a.cancelled.is_set():
                        a.interrupted = "the worker stopped"
                a.cancelled.set()
            grace = 0.0 if self._hurry.is_set() else self.cfg.stop_grace
            # Services are told first, so the executor's stop below reads as theirs, not a crash.
            self.services.begin_shutdown(grace)
            self.executor.shutdown(grace)
            for t in self._threads():
                t.join(timeout=grace + 30)
            self.services.join(timeout=grace + 15)
            if self.stopping.is_set():
                self.heartbeat_once()  # holding nothing now: the server marks it offline
            self.stop_event.set()
            self._hb_wake.set()
            hb.join(timeout=5)
            watch.join(timeout=5)
            if self.workspaces_dir.parent != self.cfg.work_dir:  # a temp folder of this run (run_as)
                with contextlib.suppress(OSError):
                    self.workspaces_dir.rmdir()

    def stop(self) -> None:
        """Stop now: running tasks are stopped (and reported interrupted for a few seconds)."""
        self.stop_event.set()
        self._slot_freed.set()
        self._hb_wake.set()

    def request_stop(self) -> None:
        """A graceful stop (SIGTERM, SIGINT): see the module docstring. Safe in a signal
        handler (it only sets flags); a second call ends the grace, a third gives up reports."""
        self._stop_requests += 1
        if self._stop_requests == 1:
            self._drain_deadline = time.monotonic() + self.cfg.stop_grace
            self.stopping.set()
            if not self.registered.is_set():
                self.stop_event.set()  # nothing runs yet: no grace needed
        elif self._stop_requests == 2:
            self._hurry.set()
        else:
            self._give_up.set()
        self._slot_freed.set()
        self._hb_wake.set()

    def _drain(self) -> None:
        with self._lock:
            n = len(self._attempts)
        grace = self.cfg.stop_grace
        if n:
            log.info("stopping: %d running task(s) may finish within %gs; taking no new work", n, grace)
        while not self._hurry.is_set() and time.monotonic() < self._drain_deadline:
            with self._lock:
                if not self._attempts:
                    break
            self._slot_freed.wait(0.2)
            self._slot_freed.clear()
        with self._lock:
            left = list(self._attempts.values())
        if left:
            kill_grace = 0.0 if self._hurry.is_set() else grace
            log.warning(
                "stopping %d task(s) still running after the grace; they are requeued without spending a retry",
                len(left),
            )
            for a in left:
                threading.Thread(
                    target=a.interrupt, args=("the worker was stopped", kill_grace), daemon=True
                ).start()
        # Each attempt ends with its report (bounded: see _report_gives_up).
        end = time.monotonic() + grace + 2 * self.heartbeat_timeout + 15
        for t in self._threads():
            t.join(timeout=max(0.0, end - time.monotonic()))

    def _threads(self) -> list[threading.Thread]:
        return [t for t in threading.enumerate() if t.name.startswith("fetchml-attempt-")]

    # -- claiming -----------------------------------------------------------------------------

    def _claim_loop(self) -> None:
        while not self.stop_event.is_set() and not self.stopping.is_set():
            with self._lock:
                busy = len(self._attempts)
            if self._draining or busy >= self.slots:
                self._slot_freed.wait(1.0)
                self._slot_freed.clear()
                continue
            try:
                # Short enough that stop() is honoured promptly; the server answers at once
                # when a task fits, so this never paces dispatch.
                assignment = self.client.workers.claim(self.worker_id, wait=min(self.claim_wait, 5.0))
            except FetchmlError as exc:
                if self.stop_event.is_set():
                    return
                log.warning("claim failed: %s", exc.message)
                self.stop_event.wait(1.0)
                continue
            if assignment is not None:
                attempt = self._start_attempt(assignment)
                if self.stopping.is_set():  # claimed as the stop came: hand it straight back
                    attempt.interrupt("the worker is stopping", 0.0)

    def _start_attempt(self, assignment: Assignment) -> _Attempt:
        attempt = _Attempt(assignment)
        with self._lock:
            self._attempts[attempt.key] = attempt
        threading.Thread(
            target=self._run_attempt,
            args=(attempt,),
            name=f"fetchml-attempt-{assignment.task.id[:8]}-{assignment.attempt}",
            daemon=True,
        ).start()
        return attempt

    # -- heartbeats ---------------------------------------------------------------------------

    def _heartbeat_loop(self) -> None:
        while not self.stop_event.is_set():
            # A stop request wakes it: the server hears at once that this worker takes no work.
            self._hb_wake.wait(self.heartbeat_interval)
            self._hb_wake.clear()
            if self.stop_event.is_set():
                return
            self.heartbeat_once()

    def _lease_watch(self) -> None:
        """No successful heartbeat for longer than the heartbeat timeout: the server has
        requeued (or is about to requeue) what this worker runs, so it is stopped here."""
        while not self.stop_event.wait(0.25):
            silent = time.monotonic() - self._last_contact
            if self._lease_lost or silent <= self.heartbeat_timeout:
                continue
            with self._lock:
                attempts = list(self._attempts.values())
            self._lease_lost = True
            if not attempts:
                continue
            log.warning(
                "no contact with the server for %.0fs (heartbeat timeout %gs): stopping %d running "
                "task(s); the server requeues them",
                silent,
                self.heartbeat_timeout,
                len(attempts),
            )
            for a in attempts:
                threading.Thread(
                    target=a.interrupt,
                    args=("the worker lost contact with the server", self.cfg.stop_grace),
                    daemon=True,
                ).start()

    def heartbeat_once(self) -> None:
        with self._lock:
            attempts = dict(self._attempts)
        active = [ActiveAttempt(task_id=t, attempt=a) for t, a in attempts]
        # Bounded, so a hung request never hides a lost lease for long.
        timeout = max(2.0, min(self.heartbeat_timeout / 2, 15.0))
        try:
            resp = self.client.workers.heartbeat(
                self.worker_id, active, stopping=self.stopping.is_set(), timeout=timeout
            )
        except FetchmlError as exc:
            log.warning("heartbeat failed: %s", exc.message)
            return
        self._last_contact = time.monotonic()
        if self._lease_lost:
            log.info("contact with the server is back")
            self._lease_lost = False
        for cmd in resp.commands:
            target = attempts.get((cmd.task_id, cmd.attempt))
            if cmd.type == "cancel" and target is not None and not target.cancelled.is_set():
                log.info("cancelling task %s attempt %d", cmd.task_id, cmd.attempt)
                threading.Thread(target=target.cancel, args=(self.cfg.stop_grace,), daemon=True).start()
        if resp.drain and not self._draining:
            log.info("draining: finishing %d running task(s), taking no new ones", len(attempts))
            self._draining = True
        if resp.status is WorkerStatus.OFFLINE:
            if self.stopping.is_set():
                return  # stopping and holding nothing: offline is what it asked for
            if self._draining:
                log.info("drained; worker is offline")
                self.stop()
                return
            # The server gave up on us (a long pause): what we run was handed to others.
            log.warning("server marked this worker offline; stopping its tasks and registering again")
            for a in attempts.values():
                a.interrupt("the server marked the worker offline", self.cfg.stop_grace)
            try:
                self.register()
            except FetchmlError as exc:
                log.warning("re-registration failed: %s", exc.message)

    # -- one attempt --------------------------------------------------------------------------

    def _report_gives_up(self) -> str | None:
        """Why a report stops being retried, or None to go on (see the module docstring)."""
        now = time.monotonic()
        if self._give_up.is_set():
            return "the worker is exiting"
        if self._report_until is not None and now > self._report_until:
            return "the worker is exiting"
        if now - self._last_contact > 2 * self.heartbeat_timeout:
            return f"no heartbeat got through for {now - self._last_contact:.0f}s: the lease is lost"
        return None

    def _report(self, a: _Attempt, status: TaskStatus, *, raise_conflict: bool = False, **kw: Any) -> bool:
        """Report, retrying transient failures until the lease is lost; False when the server
        says this attempt is no longer ours (stale), or when the report could not be made.
        `raise_conflict`: a 409 is raised rather than logged (the caller has a second way)."""
        task_id = a.assignment.task.id
        tries = 0
        while True:
            try:
                self.client.workers.report(
                    task_id,
                    StatusReport(
                        attempt=a.assignment.attempt, node_rank=a.assignment.node_rank, status=status, **kw
                    ),
                )
                return True
            except (ConflictError, NotFoundError) as exc:
                if raise_conflict and isinstance(exc, ConflictError):
                    raise
                log.warning("task %s attempt %d: %s", task_id, a.assignment.attempt, exc.message)
                return False
            except TRANSIENT as exc:
                why = self._report_gives_up()
                if why is not None:
                    log.warning(
                        "giving up the %s report for %s (%s): %s", status.value, task_id, exc.message, why
                    )
                    return False
                delay = REPORT_BACKOFF[min(tries, len(REPORT_BACKOFF) - 1)]
                tries += 1
                log.warning("report for %s failed (%s); retrying in %gs", task_id, exc.message, delay)
                if self._give_up.wait(delay):
                    return False
            except FetchmlError as exc:  # a definite refusal: a retry gets the same answer
                log.warning("report for %s refused: %s", task_id, exc.message)
                return False

    def _report_completed(self, a: _Attempt, collected: bool, output: str) -> None:
        """Without a collecting report first (nothing to upload), a server older than this
        worker refuses completed straight from running (409): collecting goes first then. An
        attempt that is no longer ours gets a 409 for that one too, and is left there."""
        if collected:
            self._report(a, TaskStatus.COMPLETED, exit_code=0, output=output)
            return
        try:
            self._report(a, TaskStatus.COMPLETED, raise_conflict=True, exit_code=0, output=output)
        except ConflictError:
            if self._report(a, TaskStatus.COLLECTING):
                self._report(a, TaskStatus.COMPLETED, exit_code=0, output=output)

    def _report_interrupted(
        self, a: _Attempt, exit_code: int | None = None, output: str | None = None
    ) -> None:
        log.info(
            "task %s attempt %d interrupted: %s", a.assignment.task.id, a.assignment.attempt, a.interrupted
        )
        self._report(
            a,
            TaskStatus.FAILED,
            exit_code=exit_code,
            error=f"interrupted: {a.interrupted}",
            output=output,
            interrupted=True,
        )

    def _run_attempt(self, a: _Attempt) -> None:
        try:
            self._run_attempt_inner(a)
        except Exception as exc:  # never let one task take the worker down
            log.exception("task %s failed in the worker", a.assignment.task.id)
            if a.shipper is not None:  # its lines before the report: the log closes with the task
                a.shipper.close()
            self._report(a, TaskStatus.FAILED, error=f"worker error: {exc}")
        finally:
            self._release(a)

    def _release(self, a: _Attempt) -> None:
        """The attempt no longer holds a slot: the claim loop may take the next task."""
        with self._lock:
            self._attempts.pop(a.key, None)
        self._slot_freed.set()

    def _run_attempt_inner(self, a: _Attempt) -> None:
        task, n = a.assignment.task, a.assignment.attempt
        root = self.workspaces_dir / f"{task.id}-{n}"
        shutil.rmtree(root, ignore_errors=True)
        # Made before the datasets are fetched: their progress lines open the task's log. Closed
        # (its lines sent) before every report, as the server takes no lines after the last one.
        shipper = LogShipper(
            self.client, task.id, n, ship=a.assignment.node_rank == 0, spool_dir=self.cfg.work_dir
        )
        with a.lock:
            a.shipper = shipper
        if a.cancelled.is_set() and a.interrupted is None:
            shipper.cancel()
        try:
            tarball = self.snapshots.get(task.snapshot_id) if task.snapshot_id else None
            datasets = [
                (spec, self.datasets.fetch(spec, a.cancelled, shipper.add)) for spec in task.dataset_specs
            ]
            ws = prepare_workspace(
                root,
                snapshot_tarball=tarball,
                datasets=datasets,
                owner=self.task_owner,
                mount_datasets=self.executor.name == "docker",
            )
            python = self.cfg.python if self.executor.name == "local" else "python"
            command = build_command(task.entrypoint, task.args, python=python)
        except (DatasetError, WorkspaceError, ValueError, FetchmlError) as exc:
            shipper.close()
            msg = exc.message if isinstance(exc, FetchmlError) else str(exc)
            if a.interrupted is not None:  # e.g. a download cut short by the stop
                self._report_interrupted(a)
            else:
                self._report(a, TaskStatus.FAILED, error=msg)
            shutil.rmtree(root, ignore_errors=True)
            return
        env = {
            **ws.env(),
            "FETCHML_TASK_ID": task.id,
            "FETCHML_JOB_NAME": task.job_name,
            "FETCHML_ATTEMPT": str(n),
            "FETCHML_NODE_RANK": str(a.assignment.node_rank),
            "FETCHML_NUM_NODES": str(a.assignment.num_nodes),
            "PYTHONUNBUFFERED": "1",
        }
        # The trackers' environment (docs/plugins.md). Secrets: never logged.
        env.update(a.assignment.env)
        trackers.prepare(env, ws.output_dir, rank0=a.assignment.node_rank == 0)
        if a.assignment.master_addr:
            env["MASTER_ADDR"] = a.assignment.master_addr
            env["MASTER_PORT"] = str(a.assignment.master_port or 29500)
        spec = ExecSpec(
            task_id=task.id,
            attempt=n,
            worker_id=self.worker_id,
            command=command,
            workspace=ws.root,
            workdir=ws.snapshot_dir,
            env=env,
            image=task.image,
            cpu=task.cpu,
            memory_gb=task.memory_gb,
            gpus=tuple(a.assignment.gpus),
            readonly_mounts=ws.readonly_mounts,
            server_id=self.server_id,
        )
        if a.cancelled.is_set():
            shipper.close()
            if a.interrupted is not None:
                self._report_interrupted(a)
            else:
                self._report(a, TaskStatus.FAILED, error="cancelled")
            shutil.rmtree(root, ignore_errors=True)
            return
        try:
            execution = self.executor.start(spec)
        except ExecutorError as exc:
            shipper.close()
            self._report(a, TaskStatus.FAILED, error=str(exc))
            shutil.rmtree(root, ignore_errors=True)
            return
        started = time.monotonic()  # the time limit counts from here
        with a.lock:
            a.execution = execution
        if a.cancelled.is_set():
            execution.stop(self.cfg.stop_grace)
        label = f"task {task.id} attempt {n}"
        limit = TimeLimit(a, execution, a.assignment.time_limit_seconds, self.cfg.stop_grace, started, label)
        try:
            if not self._report(a, TaskStatus.RUNNING):
                execution.stop(self.cfg.stop_grace)
            for line in execution.lines():
                shipper.add(line)
            status = execution.wait()
        finally:
            shipper.close()
        assert status is not None
        if shipper.stale:
            execution.cleanup()
            return
        if status.runtime_lost and a.interrupted is None and not a.cancelled.is_set():
            a.interrupted = status.error or "the executor's runtime went away"
        if a.interrupted is not None and (status.cancelled or status.runtime_lost):
            # Stopped by the worker (a stop past the grace, a lost lease): requeued, no retry
            # spent. A task that ended on its own before the stop is reported as usual.
            self._report_interrupted(a, status.exit_code, shipper.output())
            execution.cleanup()
            if not self.cfg.keep_workspaces:
                shutil.rmtree(root, ignore_errors=True)
            return
        # Artifacts, like logs, come from rank 0 of a gang. Collecting is reported only when
        # there is a file to upload (see fetchml.runner.collect).
        outputs = find_outputs(ws.output_dir, label) if a.assignment.node_rank == 0 else NO_OUTPUTS
        if outputs.files and not self._report(a, TaskStatus.COLLECTING):
            execution.cleanup()
            return
        upload_error, skipped = upload_outputs(self.client, task.id, n, ws.output_dir, outputs, label)
        output = with_skipped_note(shipper.output(), skipped)
        timed_out = limit.stopped_it(status.cancelled)
        # A limit that fired as the process ended on its own leaves it its own end.
        cancelled = status.cancelled or (a.cancelled.is_set() and not limit.expired)
        succeeded = not cancelled and status.exit_code == 0 and status.error is None and upload_error is None
        trackers.finish(env, succeeded=succeeded)
        if timed_out or cancelled:
            error = TIME_LIMIT_ERROR if timed_out else "cancelled"
            self._report(a, TaskStatus.FAILED, exit_code=status.exit_code, error=error, output=output)
        elif succeeded:
            self._report_completed(a, bool(outputs.files), output)
        else:
            error = status.error or upload_error or f"exit code {status.exit_code}"
            self._report(a, TaskStatus.FAILED, exit_code=status.exit_code, error=error, output=output)
        # Its end is reported, so the server counts the slot free: the next claim need not
        # wait for the clean-up below.
        self._release(a)
        execution.cleanup()
        if not self.cfg.keep_workspaces:
            shutil.rmtree(root, ignore_errors=True)
