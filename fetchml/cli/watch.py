"""`fetchml watch`: the scheduler live (queue, workers, running tasks), or one task until it ends.

Both read the contract's SSE streams (fetchml.client.streams), which resume by themselves after a
dropped connection; nothing here polls.

The command lives here; cli/watch_scheduler.py and cli/watch_board.py hold the scheduler view,
cli/watch_task.py following one task, cli/watch_output.py what both print.
"""

from __future__ import annotations

import typer

from fetchml.cli.common import EXIT_USAGE, ApiKeyOpt, ServerOpt, fail, handle_errors
from fetchml.cli.watch_board import RECENT, Board
from fetchml.cli.watch_output import ACTIVE, describe
from fetchml.cli.watch_scheduler import _watch_scheduler
from fetchml.cli.watch_task import LOG_DRAIN_SECONDS, LogTail, _watch_task

__all__ = ["ACTIVE", "LOG_DRAIN_SECONDS", "RECENT", "Board", "LogTail", "describe", "watch"]


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
