"""Stopping the worker: at once (`stop`), or gracefully (`request_stop`, then the drain that
gives running tasks their grace; see the fetchml.runner.worker docstring)."""

from __future__ import annotations

import logging
import threading
import time

from fetchml.runner.worker_state import WorkerState

log = logging.getLogger("fetchml.runner")


class StopMixin(WorkerState):
    def stop(self) -> None:
        """Stop now: running tasks are stopped (and reported interrupted for a few seconds)."""
        self.stop_event.set()
        self._slot_freed.set()
        self._hb_wake.set()

    def request_stop(self) -> None:
        """A graceful stop (SIGTERM, SIGINT): see the fetchml.runner.worker docstring. Safe in a
        signal handler (it only sets flags); a second call ends the grace, a third gives up
        reports."""
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
