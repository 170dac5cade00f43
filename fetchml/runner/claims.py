"""The claim loop: long-polls for assignments while a batch slot is free, each started on a
thread of its own."""

from __future__ import annotations

import logging
import threading

from fetchml.core.errors import FetchmlError
from fetchml.core.protocol import Assignment
from fetchml.runner.attempt import _Attempt
from fetchml.runner.run_attempt import AttemptMixin

log = logging.getLogger("fetchml.runner")


class ClaimMixin(AttemptMixin):
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
