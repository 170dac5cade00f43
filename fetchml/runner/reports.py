"""An attempt's status reports to the server, retried while the lease may still hold (see the
fetchml.runner.worker docstring)."""

from __future__ import annotations

import logging
import time
from typing import Any

from fetchml.core.enums import TaskStatus
from fetchml.core.errors import (
    ConflictError,
    FetchmlError,
    NotFoundError,
)
from fetchml.core.protocol import EndedAttempt, StatusReport
from fetchml.runner.attempt import _Attempt
from fetchml.runner.retry import REPORT_BACKOFF, TRANSIENT
from fetchml.runner.worker_state import WorkerState

log = logging.getLogger("fetchml.runner")


class ReportsMixin(WorkerState):
    def _report_gives_up(self) -> str | None:
        """Why a report stops being retried, or None to go on (see the fetchml.runner.worker
        docstring)."""
        now = time.monotonic()
        if self._give_up.is_set():
            return "the worker is exiting"
        if self._report_until is not None and now > self._report_until:
            return "the worker is exiting"
        if now - self._last_contact > 2 * self.heartbeat_timeout:
            return f"no heartbeat got through for {now - self._last_contact:.0f}s: the lease is lost"
        return None

    def _claims_with_report(self) -> bool:
        """Whether a last report may claim the next task: the server takes it, and this worker
        takes new work."""
        return (
            self.claim_takes_report
            and self.slots > 0
            and not self._draining
            and not self.stopping.is_set()
            and not self.stop_event.is_set()
        )

    def _report_end(self, a: _Attempt, status: TaskStatus, **kw: Any) -> bool:
        """The attempt's last report (completed or failed); it claims the next task with it when
        it can (`a.successor`, see fetchml.runner.claims)."""
        return self._report(a, status, claim_next=self._claims_with_report(), **kw)

    def _report(
        self,
        a: _Attempt,
        status: TaskStatus,
        *,
        raise_conflict: bool = False,
        claim_next: bool = False,
        **kw: Any,
    ) -> bool:
        """Report, retrying transient failures until the lease is lost; False when the server
        says this attempt is no longer ours (stale), or when the report could not be made.
        `raise_conflict`: a 409 is raised rather than logged (the caller has a second way).
        `claim_next`: sent as a claim's body (a last report only): a task placed on the slot it
        frees comes back in `a.successor`."""
        task_id = a.assignment.task.id
        tries = 0
        while True:
            try:
                fields: dict[str, Any] = {
                    "attempt": a.assignment.attempt,
                    "node_rank": a.assignment.node_rank,
                    "status": status,
                    **kw,
                }
                if a.start_unreported:
                    fields["started"] = True
                if claim_next:
                    # wait=0: the slot's next task if one fits now; the claim loop waits for more.
                    a.successor = self.client.workers.claim(
                        self.worker_id, 0.0, EndedAttempt(task_id=task_id, **fields)
                    )
                else:
                    self.client.workers.report(task_id, StatusReport(**fields))
                a.reported = status.value
                a.start_unreported = False
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
        if collected or self.claim_takes_report:  # such a server takes running -> completed
            self._report_end(a, TaskStatus.COMPLETED, exit_code=0, output=output)
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
