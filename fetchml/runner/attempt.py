"""One attempt of a task held by the worker: what runs it, and how the worker stops it."""

from __future__ import annotations

import threading
import time

from fetchml.core.protocol import Assignment
from fetchml.runner.executors.base import Execution
from fetchml.runner.logship import LogShipper
from fetchml.runner.phases import PhaseClock


class _Attempt:
    def __init__(self, assignment: Assignment, claimed: tuple[float, float] | None = None) -> None:
        """`claimed`: when the claim that delivered it was sent and answered (perf_counter)."""
        self.assignment = assignment
        now = time.perf_counter()
        self.phases = PhaseClock(*(claimed or (now, now)))
        self.reported: str | None = None  # the last status the server took
        # The process started but no running report went out (it ended within the window,
        # WorkerConfig.running_report_window): the next report says `started` for it.
        self.start_unreported = False
        # The next assignment, claimed together with this attempt's last report.
        self.successor: Assignment | None = None
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
