"""A task's time limit on the worker (docs/scheduling.md#time-limits).

The assignment carries the limit in seconds (`time_limit_seconds`, from the task's minutes on
the server). It is measured from the start of the process, not from the claim: staging a
snapshot or datasets does not count. Past it the attempt is stopped as a cancel stops it
(SIGTERM or `docker stop`, then a kill after the worker's stop grace), and the worker reports
it failed with error "time limit" and the exit code it saw. The server never retries it.

A cancel or a worker stop that came first wins: the limit then does nothing. The limit marks the
attempt cancelled under the attempt's lock, so a worker stop arriving during its grace cannot
turn the attempt into an interrupted one, which the server would requeue.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Protocol

from fetchml.runner.executors.base import Execution

log = logging.getLogger("fetchml.runner")


class LimitedAttempt(Protocol):
    """What the watcher needs of the worker's attempt (fetchml.runner.attempt._Attempt)."""

    lock: threading.Lock
    cancelled: threading.Event


class TimeLimit:
    """Watches one execution; `expired` turns true when the limit stopped it."""

    def __init__(
        self,
        attempt: LimitedAttempt,
        execution: Execution,
        seconds: float | None,
        grace: float,
        started: float | None = None,
        label: str = "",
    ) -> None:
        self.attempt = attempt
        self.execution = execution
        self.seconds = seconds
        self.grace = grace
        self.started = time.monotonic() if started is None else started  # the process's start
        self.label = label
        self.expired = False
        if seconds is not None:
            threading.Thread(target=self._watch, name=f"fetchml-time-limit-{label[:12]}", daemon=True).start()

    def _watch(self) -> None:
        assert self.seconds is not None
        remaining = self.seconds - (time.monotonic() - self.started)
        if self.execution.wait(max(0.0, remaining)) is not None:
            return  # ended in time
        with self.attempt.lock:
            if self.attempt.cancelled.is_set():
                return  # already being stopped (a cancel, a worker stop, a lost lease)
            self.attempt.cancelled.set()
            self.expired = True
        log.info("%s: time limit of %gs reached; stopping it", self.label, self.seconds)
        self.execution.stop(self.grace)

    def stopped_it(self, cancelled: bool) -> bool:
        """Whether the attempt ended because of the limit: it expired and the stop it sent is
        what ended the process (`cancelled`, the executor's word), not an exit of its own."""
        return self.expired and cancelled
