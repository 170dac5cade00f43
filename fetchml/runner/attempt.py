"""One attempt of a task held by the worker: what runs it, and how the worker stops it."""

from __future__ import annotations

import threading

from fetchml.core.protocol import Assignment
from fetchml.runner.executors.base import Execution
from fetchml.runner.logship import LogShipper


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
