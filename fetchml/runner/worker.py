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

The parts, one module each, make up `Worker` as mixins over the shared state
(fetchml.runner.worker_state): registration and orphan clean-up (registration), heartbeats and
the lease (heartbeat), stopping and the drain (stopping), the claim loop (claims), one attempt
(run_attempt, with attempt and reports). This module puts them together and runs them.
"""

from __future__ import annotations

import contextlib
import threading
import time

from fetchml.client.api import FetchmlClient
from fetchml.runner.attempt import _Attempt as _Attempt
from fetchml.runner.claims import ClaimMixin
from fetchml.runner.executors.base import Executor
from fetchml.runner.gpus import GpuProvider
from fetchml.runner.heartbeat import HeartbeatMixin
from fetchml.runner.registration import REGISTER_BACKOFF_MAX, REGISTER_BACKOFF_START
from fetchml.runner.retry import REPORT_BACKOFF, TRANSIENT
from fetchml.runner.services import ServiceManager
from fetchml.runner.workdir import _reachable_by_others as _reachable_by_others
from fetchml.runner.workdir import prepare_work_dir
from fetchml.runner.worker_config import WorkerConfig, gpu_provider_for, make_executor

# The names importers have always taken from here.
__all__ = [
    "REGISTER_BACKOFF_MAX",
    "REGISTER_BACKOFF_START",
    "REPORT_BACKOFF",
    "TRANSIENT",
    "Worker",
    "WorkerConfig",
    "gpu_provider_for",
    "make_executor",
    "prepare_work_dir",
]


class Worker(ClaimMixin, HeartbeatMixin):
    def __init__(
        self,
        cfg: WorkerConfig,
        client: FetchmlClient,
        *,
        executor: Executor | None = None,
        gpu_provider: GpuProvider | None = None,
    ) -> None:
        super().__init__(cfg, client, executor=executor, gpu_provider=gpu_provider)
        self.services = ServiceManager(self)

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
