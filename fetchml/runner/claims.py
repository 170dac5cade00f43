"""The claim loop: long-polls for assignments while a batch slot is free, each started on a
thread of its own (`AttemptMixin._take`). An attempt that ends may claim its successor itself,
with its last report (fetchml.runner.reports); the loop covers the slots that stay free."""

from __future__ import annotations

import logging
import time

from fetchml.core.errors import FetchmlError
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
                sent = time.perf_counter()
                assignment = self.client.workers.claim(self.worker_id, wait=min(self.claim_wait, 5.0))
            except FetchmlError as exc:
                if self.stop_event.is_set():
                    return
                log.warning("claim failed: %s", exc.message)
                self.stop_event.wait(1.0)
                continue
            if assignment is not None:
                self._take(assignment, (sent, time.perf_counter()))
