"""`fetchml watch`: the scheduler live (queue, workers, running tasks), or one task until it ends.

Both read the contract's SSE streams (fetchml.client.streams), which resume by themselves after a
dropped connection; nothing here polls.
"""

from __future__ import annotations

import json
import sys
import threading
from collections import deque
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import typer

from fetchml.cli.common import (
    EXIT_USAGE,
    STATUS_STYLES,
    ApiKeyOpt,
    ServerOpt,
    console,
    fail,
    handle_errors,
    table,
    text,
)
from fetchml.cli.logs import exit_status
from fetchml.cli.workers import WORKER_STYLES

if TYPE_CHECKING:
    from collections.abc import Iterator

    from fetchml.client import FetchmlClient
    from fetchml.client.streams import StreamEvent

ACTIVE = ("preparing", "running", "collecting")
RECENT = 8  # events listed at the bottom of the live view
# After the job stream's `end`, how long the log tail may take to print the last lines.
LOG_DRAIN_SECONDS = 30.0


def _say(message: str) -> None:
    sys.stderr.write(f"fetchml: {message}\n")
    sys.stderr.flush()


def _print_event(ev: StreamEvent) -> None:
    body: dict[str, Any] = {"event": ev.event}
    if ev.id is not None:
        body["id"] = ev.id
    body["data"] = ev.data
    sys.stdout.write(json.dumps(body, separators=(",", ":"), ensure_ascii=False) + "\n")
    sys.stdout.flush()


def _reconnecting(attempt: int, exc: Exception) -> None:
    _say(f"stream interrupted ({exc}); resuming (try {attempt})")


@handle_errors
def watch(
    task_id: str | None = typer.Argument(
        None, metavar="TASK_ID", help="Follow this task until it ends (default: the whole scheduler)."
    ),
    as_json: bool = typer.Option(
        False, "--json", help="Print each event as one JSON object per line instead of the live view."
    ),
    max_events: int | None = typer.Option(
        None,
        "--max-events",
        min=1,
        metavar="N",
        help="Without TASK_ID: stop after N events (the opening snapshot counts), then exit 0.",
    ),
    tail: int | None = typer.Option(
        None, "--tail", "-n", min=0, metavar="N", help="With TASK_ID: start the log N lines before the end."
    ),
    no_logs: bool = typer.Option(False, "--no-logs", help="With TASK_ID: transitions only, no log tail."),
    server: str | None = ServerOpt,
    api_key: str | None = ApiKeyOpt,
) -> None:
    """Watch the scheduler live, or one task until it ends.

    Without TASK_ID (admin keys): queue depth by priority, workers, running tasks and the latest
    events, kept current from the scheduler's event stream until Ctrl-C (exit 0).

    With TASK_ID (the task's owner or an admin): its transitions on stderr and its log on stdout
    as they happen; exits when the task ends, with the task's exit code.

      fetchml watch
      fetchml watch 3f2a9c0e4b5d4e8f9a1b2c3d4e5f6a7b && echo trained
      fetchml watch --json --max-events 10 | jq .event
    """
    from fetchml.client import FetchmlClient, resolve

    if task_id is not None and max_events is not None:
        fail(
            "--max-events is for the scheduler view; with TASK_ID the command ends with the task", EXIT_USAGE
        )
    if task_id is None and (tail is not None or no_logs):
        fail("--tail and --no-logs need a TASK_ID", EXIT_USAGE)
    if task_id is not None and as_json and (tail is not None or no_logs):
        fail("--json prints events only (no log): drop --tail and --no-logs", EXIT_USAGE)
    config = resolve(server, api_key)
    with FetchmlClient.from_config(config) as c:
        if task_id is None:
            code = _watch_scheduler(c, as_json=as_json, max_events=max_events)
        else:
            logs = None if as_json or no_logs else FetchmlClient.from_config(config)
            try:
                code = _watch_task(c, task_id, as_json=as_json, logs=logs, tail=tail)
            finally:
                if logs is not None:
                    logs.close()
    raise typer.Exit(code)


# --- the scheduler ----------------------------------------------------------------------------


@dataclass
class Board:
    """What the live view shows, built from a snapshot and kept current by events."""

    server_url: str = ""
    last_event_id: int | None = None
    events: int = 0
    depth: int = 0
    by_priority: dict[str, int] = field(default_factory=dict)
    workers: dict[str, dict[str, Any]] = field(default_factory=dict)
    tasks: dict[str, dict[str, Any]] = field(default_factory=dict)
    recent: deque[tuple[str, str]] = field(default_factory=lambda: deque(maxlen=RECENT))
    note: str = ""

    def apply(self, ev: StreamEvent) -> None:
        d = ev.data
        self.events += 1
        if ev.id is not None:
            self.last_event_id = ev.id
        handler = getattr(self, "_on_" + ev.event, None)
        if handler is not None:
            handler(d)
        if ev.event != "snapshot":
            self.recent.appendleft((str(d.get("at", ""))[11:19], describe(ev)))

    def _on_snapshot(self, d: dict[str, Any]) -> None:
        status = d.get("status") or {}
        self.depth = int(status.get("batch_queue_depth", 0)) + int(status.get("service_queue_depth", 0))
        head = d.get("queue") or []
        # The snapshot lists the queue's head only: counts by priority are whole when it is all.
        self.by_priority = _count_priorities(head) if len(head) >= self.depth else {}
        self.workers = {w["id"]: w for w in d.get("workers") or []}
        self.tasks = {}
        self.note = "resumed too late: this is a fresh snapshot" if d.get("reason") else ""

    def seed(self, active: list[dict[str, Any]], queued: list[dict[str, Any]] | None) -> None:
        """Tasks read once after the snapshot (it has no running tasks, and a long queue's
        priorities only by its head). Later events keep them current."""
        for t in active:
            self.tasks.setdefault(t["id"], _task_row(t))
        if queued is not None and not self.by_priority:
            self.by_priority = _count_priorities(queued)

    def _on_task_transition(self, d: dict[str, Any]) -> None:
        tid = d.get("task_id")
        if not tid:
            return
        if d.get("to") in ACTIVE:
            row = self.tasks.setdefault(tid, {"id": tid})
            row.update(
                {k: d[k] for k in ("job_name", "user_id", "priority", "worker_id") if d.get(k) is not None}
            )
            row["status"] = d["to"]
        else:
            self.tasks.pop(tid, None)

    def _on_priority_changed(self, d: dict[str, Any]) -> None:
        row = self.tasks.get(str(d.get("task_id")))
        if row is not None:
            row["priority"] = d.get("to")

    def _on_task_placement(self, d: dict[str, Any]) -> None:
        row = self.tasks.get(str(d.get("task_id")))
        if row is not None and d.get("worker_id"):
            row["worker_id"] = d["worker_id"]

    def _on_worker(self, d: dict[str, Any]) -> None:
        wid = d.get("worker_id")
        if wid:
            self.workers.setdefault(wid, {"id": wid, "name": d.get("name", wid)})["status"] = d.get("status")

    _on_worker_connected = _on_worker
    _on_worker_draining = _on_worker
    _on_worker_disconnected = _on_worker

    def _on_queue_depth(self, d: dict[str, Any]) -> None:
        self.depth = int(d.get("depth", 0))
        self.by_priority = {str(k): int(v) for k, v in (d.get("by_priority") or {}).items()}

    def render(self) -> Any:
        from rich.console import Group

        active_workers = sum(1 for w in self.workers.values() if w.get("status") == "active")
        head = text(
            f"{self.server_url}  event #{self.last_event_id if self.last_event_id is not None else '-'}  "
            f"{self.depth} queued, {len(self.tasks)} running, {active_workers} workers active"
            + (f"  ({self.note})" if self.note else ""),
            "bold",
        )

        queue = table(("PRIORITY", {"justify": "right"}), ("QUEUED", {"justify": "right"}))
        for prio, n in sorted(self.by_priority.items(), key=lambda kv: -int(kv[0])):
            queue.add_row(prio, str(n))
        if not self.by_priority and self.depth:
            queue.add_row("all", str(self.depth))

        workers = table(
            ("WORKER", {"no_wrap": True}),
            ("STATUS", {}),
            ("GPUS", {"justify": "right"}),
            ("TASKS", {"justify": "right"}),
        )
        on: dict[str, int] = {}
        for t in self.tasks.values():
            if t.get("worker_id"):
                on[t["worker_id"]] = on.get(t["worker_id"], 0) + 1
        for wid, w in sorted(self.workers.items()):
            status = str(w.get("status") or "-")
            gpus = (w.get("capabilities") or {}).get("gpu_count")
            workers.add_row(
                text(wid), text(status, WORKER_STYLES.get(status, "")), text(gpus), str(on.get(wid, 0))
            )

        tasks = table(
            ("TASK", {"no_wrap": True}),
            ("JOB", {"overflow": "fold"}),
            ("USER", {}),
            ("STATUS", {}),
            ("WORKER", {}),
            ("PRIO", {"justify": "right"}),
        )
        for tid, t in sorted(self.tasks.items()):
            status = str(t.get("status") or "-")
            tasks.add_row(
                text(tid),
                text(t.get("job_name")),
                text(t.get("user_id")),
                text(status, STATUS_STYLES.get(status, "")),
                text(t.get("worker_id")),
                text(t.get("priority")),
            )

        recent = table(("AT", {"no_wrap": True}), ("EVENT", {"overflow": "fold"}))
        for at, line in self.recent:
            recent.add_row(text(at), text(line))
        return Group(
            head,
            text("Queue", "bold"),
            queue,
            text("Workers", "bold"),
            workers,
            text("Running", "bold"),
            tasks,
            text("Latest events", "bold"),
            recent,
        )


def _count_priorities(tasks: list[dict[str, Any]]) -> dict[str, int]:
    out: dict[str, int] = {}
    for t in tasks:
        key = str(t.get("priority"))
        out[key] = out.get(key, 0) + 1
    return out


def _task_row(t: dict[str, Any]) -> dict[str, Any]:
    return {k: t.get(k) for k in ("id", "job_name", "user_id", "status", "worker_id", "priority")}


def describe(ev: StreamEvent) -> str:
    """One line for an event, for people."""
    d = ev.data
    name = ev.event
    tid = d.get("task_id", "")
    if name in ("task_transition", "transition"):
        where = f" on {d['worker_id']}" if d.get("worker_id") and d.get("to") in ACTIVE else ""
        tail = ""
        if d.get("exit_code") is not None:
            tail += f" exit {d['exit_code']}"
        if d.get("error"):
            tail += f": {d['error']}"
        return f"task {tid} ({d.get('job_name', '?')}) {d.get('from') or 'new'} -> {d.get('to')}{where}{tail}"
    if name == "priority_changed":
        return f"task {tid} priority {d.get('from')} -> {d.get('to')}"
    if name == "task_placement":
        return f"task {tid} placed on {d.get('worker_id') or '-'}"
    if name.startswith("worker_"):
        why = f" ({d['reason']})" if d.get("reason") else ""
        return f"worker {d.get('worker_id')} {d.get('status')}{why}"
    if name == "queue_depth":
        return f"queue depth {d.get('depth')}"
    if name == "reservation_changed":
        return f"reservation {d.get('reservation_id')} {d.get('status')} ({d.get('user_id')})"
    return name


def _seed(c: FetchmlClient, board: Board) -> None:
    active: list[dict[str, Any]] = []
    for status in ACTIVE:
        page = c.tasks.list(status=status, limit=1000)
        active.extend(t.model_dump(mode="json") for t in page.tasks)
    queued = None
    if not board.by_priority and board.depth:
        queued = [t.model_dump(mode="json") for t in c.tasks.list(status="queued", limit=1000).tasks]
    board.seed(active, queued)


def _admin_only(events: Iterator[StreamEvent]) -> Iterator[StreamEvent]:
    """The stream's events; a 403 says what would work instead."""
    from fetchml.core.errors import ForbiddenError

    try:
        yield from events
    except ForbiddenError as exc:
        raise ForbiddenError(
            f"{exc.message}: the scheduler view needs an admin key; with a user key, "
            "`fetchml watch TASK_ID` follows one of your own tasks",
            trace_id=exc.trace_id,
        ) from None


def _watch_scheduler(c: FetchmlClient, *, as_json: bool, max_events: int | None) -> int:
    stream = c.streams.scheduler(on_reconnect=_reconnecting)
    seen = 0
    try:
        events = _admin_only(iter(stream))
        if as_json:
            for ev in events:
                _print_event(ev)
                seen += 1
                if max_events is not None and seen >= max_events:
                    break
            return 0
        from rich.live import Live

        board = Board(server_url=c.server_url)
        first = next(events)  # the snapshot, or the refusal (403 for a user key) raised here
        board.apply(first)
        _seed(c, board)
        seen = 1
        with Live(board.render(), console=console(), auto_refresh=False, redirect_stderr=False) as live:
            _say(f"watching {c.server_url} (Ctrl-C to stop)")
            if max_events is not None and seen >= max_events:
                return 0
            for ev in events:
                board.apply(ev)
                if ev.event == "snapshot":
                    _seed(c, board)
                live.update(board.render(), refresh=True)
                seen += 1
                if max_events is not None and seen >= max_events:
                    break
        return 0
    except KeyboardInterrupt:
        return 0  # the way to stop watching
    except BrokenPipeError:
        return 0
    finally:
        stream.close()


# --- one task ---------------------------------------------------------------------------------


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
