"""What `fetchml run` draws on stderr while it works, when stderr is a terminal:

- snapshot: the files and bytes packed so far, then the upload (bytes sent of the total);
- queued: one status line with the time waited and the server's pending reason, kept up to date;
  preparing (the worker fetches the snapshot and datasets; their progress lines are the task's
  log, printed on stdout as they come); then one `fetchml: task ... running` line, after which
  the task's output streams on stdout as before.

Everything drawn is redrawn in place and erased when done. Into a pipe, a file or a CI log none of
it appears, and the server is not polled for it: only the `fetchml: ...` lines, each printed once.
Rich is imported inside functions, and only when there is a terminal to draw on (start-up time).
"""

from __future__ import annotations

import os
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from types import TracebackType
from typing import Any

POLL_SECONDS = 1.0
WORKER_LINE = "fetchml: "  # how the worker's own lines in a task's log start (its datasets)


def interactive() -> bool:
    """Progress only where a person watches: stderr a terminal, TERM not dumb. FORCE_COLOR does not
    count (it asks for colour; redrawn lines would only litter a log)."""
    return _isatty(sys.stderr) and os.environ.get("TERM") != "dumb"


def _isatty(stream: Any) -> bool:
    try:
        return os.isatty(stream.fileno())
    except (AttributeError, OSError, ValueError):
        return False


def _console() -> Any:
    from rich.console import Console

    # Terminal-ness is decided by interactive(), not again by Rich (which FORCE_COLOR would sway).
    return Console(stderr=True, highlight=False, force_terminal=True)


def _elapsed(seconds: float) -> str:
    minutes, secs = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


@contextmanager
def packing(enabled: bool) -> Iterator[Callable[[int, int], None] | None]:
    """A callback for pack_directory's progress (None when there is nothing to draw)."""
    if not enabled:
        yield None
        return
    from rich.progress import Progress, SpinnerColumn, TextColumn

    from fetchml.cli.artifacts import human_size

    columns = (SpinnerColumn(), TextColumn("{task.description}"))
    with Progress(*columns, console=_console(), transient=True, redirect_stdout=False) as bar:
        task = bar.add_task("snapshot: packing", total=None)

        def packed(files: int, size: int) -> None:
            bar.update(task, description=f"snapshot: packing, {files} files ({human_size(size)})")

        yield packed


@contextmanager
def uploading(enabled: bool, total: int) -> Iterator[Callable[[int], None] | None]:
    """A callback for the snapshot upload's progress (None when there is nothing to draw)."""
    if not enabled:
        yield None
        return
    from rich.progress import (
        BarColumn,
        DownloadColumn,
        Progress,
        TextColumn,
        TimeRemainingColumn,
        TransferSpeedColumn,
    )

    columns = (
        TextColumn("snapshot: uploading"),
        BarColumn(),
        DownloadColumn(binary_units=True),
        TransferSpeedColumn(),
        TimeRemainingColumn(),
    )
    with Progress(*columns, console=_console(), transient=True, redirect_stdout=False) as bar:
        task = bar.add_task("upload", total=total)
        yield lambda n: bar.advance(task, n)


class Phases:
    """The task's phase as one status line on stderr while it waits to run, and its log lines on
    stdout (through `line`, which lifts the status line out of their way on a shared terminal).
    Disabled (not a terminal): `line` only prints, and nothing is polled or drawn."""

    def __init__(self, client: Any, task_id: str, enabled: bool, poll: float = POLL_SECONDS) -> None:
        self.client = client
        self.task_id = task_id
        self.enabled = enabled
        self.poll = poll
        self._live: Any = None
        self._spinner: Any = None
        self._phase = "queued"
        self._detail: str | None = None
        self._since = time.monotonic()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._output_seen = False
        # stdout on the same terminal: the status line is erased before each line and redrawn below.
        self._shared = _isatty(sys.stdout)

    def __enter__(self) -> Phases:
        if self.enabled:
            from rich.live import Live
            from rich.spinner import Spinner

            self._spinner = Spinner("dots")
            self._live = Live(
                get_renderable=self._frame,
                console=_console(),
                transient=True,
                refresh_per_second=8,
                redirect_stdout=False,
                redirect_stderr=False,
            )
            self._live.start(refresh=True)
            self._thread = threading.Thread(target=self._watch, name="fetchml-run-phase", daemon=True)
            self._thread.start()
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._stop.set()
        with self._lock:
            self._end_live()
        if self._thread is not None:
            self._thread.join(5)

    def line(self, text: str) -> None:
        """One line of the task's log, to stdout."""
        if self._live is not None and not self._output_seen and not text.startswith(WORKER_LINE):
            # The task's own output: it runs. Said first, not a poll later, after its lines.
            self._output_seen = True
            self._look()
        with self._lock:
            lift = self._live is not None and self._shared
            if lift:
                self._live.stop()
            sys.stdout.write(text + "\n")
            sys.stdout.flush()
            if lift:
                self._live.start(refresh=True)

    # -- the status line -----------------------------------------------------------------------

    def _frame(self) -> Any:
        from rich.text import Text

        waited = _elapsed(time.monotonic() - self._since)
        detail = f": {self._detail}" if self._detail else ""
        line = f"task {self.task_id[:12]} {self._phase} {waited}{detail}"
        self._spinner.update(text=Text(line, no_wrap=True, overflow="ellipsis"))
        return self._spinner

    def _end_live(self) -> None:
        """Called with the lock held."""
        if self._live is not None:
            self._live.stop()
            self._live = None

    def _watch(self) -> None:
        while not self._stop.is_set() and not self._look():
            self._stop.wait(self.poll)

    def _look(self) -> bool:
        """Read the task and show its phase; True once there is nothing more to show."""
        try:
            task = self.client.tasks.get(self.task_id)
        except Exception:  # a blip (or the server going away): the line stays as it was
            return False
        return self._show(task)

    def _show(self, task: Any) -> bool:
        """Update the status line from `task`; True once there is nothing more to show."""
        status = task.status.value
        if status == "queued":
            self._phase, self._detail = "queued", task.pending_reason
            return False
        if status == "preparing":
            where = f" on worker {task.worker_id}" if task.worker_id else ""
            self._phase, self._detail = f"preparing{where}", "fetching its snapshot and datasets"
            return False
        with self._lock:
            if self._live is None or self._stop.is_set():
                return True
            self._end_live()
            if status in ("running", "collecting"):
                where = f" on worker {task.worker_id}" if task.worker_id else ""
                waited = _elapsed(time.monotonic() - self._since)
                sys.stderr.write(f"fetchml: task {self.task_id} running{where} (waited {waited})\n")
                sys.stderr.flush()
        return True
