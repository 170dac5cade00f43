"""Running one attempt: staging (snapshot, datasets, workspace), the executor, its log, outputs
and the last report."""

from __future__ import annotations

import logging
import shutil
import threading
import time

from fetchml.core.enums import TaskStatus
from fetchml.core.errors import FetchmlError
from fetchml.core.lifecycle import TIME_LIMIT_ERROR
from fetchml.core.protocol import Assignment
from fetchml.runner import trackers
from fetchml.runner.attempt import _Attempt
from fetchml.runner.collect import NO_OUTPUTS, find_outputs, upload_outputs, with_skipped_note
from fetchml.runner.datasets import DatasetError
from fetchml.runner.entrypoint import build_command
from fetchml.runner.executors.base import ExecSpec, Execution, ExecutorError
from fetchml.runner.logship import LogShipper
from fetchml.runner.reports import ReportsMixin
from fetchml.runner.timelimit import TimeLimit
from fetchml.runner.workspace import WorkspaceError, prepare_workspace

log = logging.getLogger("fetchml.runner")


class AttemptMixin(ReportsMixin):
    def _take(self, assignment: Assignment, claimed: tuple[float, float] | None = None) -> _Attempt:
        """Start an assignment on a thread of its own. `claimed`: when its claim was sent and
        answered (perf_counter), for the phase log."""
        attempt = _Attempt(assignment, claimed)
        with self._lock:
            self._attempts[attempt.key] = attempt
        threading.Thread(
            target=self._run_attempt,
            args=(attempt,),
            name=f"fetchml-attempt-{assignment.task.id[:8]}-{assignment.attempt}",
            daemon=True,
        ).start()
        if self.stopping.is_set() or self.stop_event.is_set():  # claimed as the stop came: hand it back
            attempt.interrupt("the worker is stopping", 0.0)
        return attempt

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
            t = a.assignment
            self.phase_log.write(t.task.id, t.attempt, a.reported or "unreported", a.phases)

    def _release(self, a: _Attempt) -> None:
        """The attempt no longer holds a slot: the claim loop may take the next task."""
        with self._lock:
            self._attempts.pop(a.key, None)
        self._slot_freed.set()

    def _ended_within_window(self, a: _Attempt, execution: Execution) -> bool:
        """Whether the process ended within the running-report window (a single-node attempt,
        with a server that takes `started`): then its one report is its end. Its output waits in
        the pipe meanwhile; a process that fills the pipe first simply outlasts the window. The
        local executor only: a container does not end within milliseconds, and asking Docker
        whether it has would cost API calls for nothing."""
        window = self.cfg.running_report_window
        if window <= 0 or not self.report_takes_started or a.assignment.num_nodes != 1:
            return False
        if self.executor.name != "local":
            return False
        return execution.wait(window) is not None

    def _run_attempt_inner(self, a: _Attempt) -> None:
        task, n = a.assignment.task, a.assignment.attempt
        lap = a.phases.lap
        lap("start")
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
        lap("prepare")
        try:
            execution = self.executor.start(spec)
        except ExecutorError as exc:
            shipper.close()
            self._report(a, TaskStatus.FAILED, error=str(exc))
            shutil.rmtree(root, ignore_errors=True)
            return
        started = time.monotonic()  # the time limit counts from here
        lap("spawn")
        with a.lock:
            a.execution = execution
        if a.cancelled.is_set():
            execution.stop(self.cfg.stop_grace)
        label = f"task {task.id} attempt {n}"
        limit = TimeLimit(a, execution, a.assignment.time_limit_seconds, self.cfg.stop_grace, started, label)
        try:
            if self._ended_within_window(a, execution):
                a.start_unreported = True  # the end report says it started
            elif not self._report(a, TaskStatus.RUNNING):
                execution.stop(self.cfg.stop_grace)
            lap("report_running")
            for line in execution.lines():
                shipper.add(line)
            status = execution.wait()
            lap("run")
        finally:
            shipper.close()
        lap("logs")
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
        lap("collect")
        if timed_out or cancelled:
            error = TIME_LIMIT_ERROR if timed_out else "cancelled"
            self._report_end(a, TaskStatus.FAILED, exit_code=status.exit_code, error=error, output=output)
        elif succeeded:
            self._report_completed(a, bool(outputs.files), output)
        else:
            error = status.error or upload_error or f"exit code {status.exit_code}"
            self._report_end(a, TaskStatus.FAILED, exit_code=status.exit_code, error=error, output=output)
        lap("report_end")
        if a.successor is not None:
            # Claimed with the last report: it takes this slot over before the slot is given
            # back, so the claim loop does not ask for it a second time.
            now = time.perf_counter()
            self._take(a.successor, (now, now))
        # Its end is reported, so the server counts the slot free: the next claim need not
        # wait for the clean-up below.
        self._release(a)
        execution.cleanup()
        if not self.cfg.keep_workspaces:
            shutil.rmtree(root, ignore_errors=True)
