"""`fetchml watch TASK_ID`: one task's transitions on stderr and its log on stdout until it ends."""

from __future__ import annotations

import sys
import threading
from typing import TYPE_CHECKING

from fetchml.cli.logs import exit_status
from fetchml.cli.watch_output import _print_event, _reconnecting, _say, describe

if TYPE_CHECKING:
    from fetchml.client import FetchmlClient

# After the job stream's `end`, how long the log tail may take to print the last lines.
LOG_DRAIN_SECONDS = 30.0


class LogTail:
    """The task's log, followed on a thread (the follow=true stream, which the server wakes from
    the feed), resumed at the next line after a dropped connection."""

    RETRIES = 8

    def __init__(self, c: FetchmlClient, task_id: str, tail: int | None) -> None:
        self.c = c
        self.task_id = task_id
        self.tail = tail
        self.stopped = threading.Event()
        self.error: Exception | None = None
        self.thread = threading.Thread(target=self._run, name="fetchml-log-tail", daemon=True)

    def start(self) -> None:
        self.thread.start()

    def _run(self) -> None:
        from fetchml.client.base import ServerUnreachableError
        from fetchml.core.errors import ServiceUnavailableError

        try:
            offset = 0 if self.tail is None else self.c.logs.page(self.task_id, tail=self.tail).offset
            failures = 0
            while not self.stopped.is_set():
                try:
                    for line in self.c.logs.follow(self.task_id, offset=offset):
                        if self.stopped.is_set():
                            return
                        sys.stdout.write(line + "\n")
                        sys.stdout.flush()
                        offset += 1
                        failures = 0
                    return  # the task has ended and every line is printed
                except (ServerUnreachableError, ServiceUnavailableError):
                    if self.stopped.is_set() or failures >= self.RETRIES:
                        raise
                    failures += 1
                    self.stopped.wait(min(0.2 * 2**failures, 2.0))
        except BrokenPipeError:
            self.stopped.set()
        except Exception as exc:  # reported by the main thread; the transitions go on
            if not self.stopped.is_set():
                self.error = exc

    def finish(self, timeout: float) -> None:
        """Let it print the last lines (its stream ends by itself once the task has ended)."""
        self.thread.join(timeout)
        self.stop()

    def stop(self) -> None:
        self.stopped.set()


def _watch_task(
    c: FetchmlClient, task_id: str, *, as_json: bool, logs: FetchmlClient | None, tail: int | None
) -> int:
    from fetchml.client.base import ServerUnreachableError

    stream = c.streams.job(task_id, on_reconnect=_reconnecting)
    tailer: LogTail | None = None
    try:
        for ev in stream:
            d = ev.data
            if as_json:
                _print_event(ev)
            if ev.event == "snapshot":
                task = d.get("task") or {}
                if not as_json:
                    if d.get("reason"):
                        _say("resumed too late to replay what was missed; the task as it is now:")
                    where = f" on {task['worker_id']}" if task.get("worker_id") else ""
                    _say(f"task {task_id} ({task.get('job_name', '?')}) is {task.get('status')}{where}")
                if logs is not None and tailer is None:
                    tailer = LogTail(logs, task_id, tail)
                    tailer.start()
            elif ev.event == "end":
                if tailer is not None:
                    tailer.finish(LOG_DRAIN_SECONDS)
                    if tailer.error is not None:
                        _say(f"log tail stopped: {tailer.error}")
                status, code = str(d.get("status")), d.get("exit_code")
                if not as_json:
                    outcome = d.get("outcome") or status
                    tail_msg = "" if outcome == "completed" else f": {d.get('error') or 'no error recorded'}"
                    _say(f"task {task_id} {outcome}{tail_msg}")
                return exit_status(status, code if isinstance(code, int) else None)
            elif not as_json:
                _say(describe(ev))
        raise ServerUnreachableError(f"The stream of task {task_id} ended before the task did")
    except KeyboardInterrupt:
        _say(f"interrupted; task {task_id} goes on (fetchml cancel {task_id} stops it)")
        return 130
    finally:
        stream.close()
        if tailer is not None:
            tailer.stop()
