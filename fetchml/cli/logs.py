"""`fetchml logs`: a task's output, as a page or followed live."""

from __future__ import annotations

import os
import sys
from typing import TYPE_CHECKING

import typer

from fetchml.cli.common import (
    EXIT_ERROR,
    EXIT_USAGE,
    ApiKeyOpt,
    JsonOpt,
    ServerOpt,
    client,
    fail,
    handle_errors,
    print_json,
)

if TYPE_CHECKING:
    from fetchml.client import FetchmlClient
    from fetchml.core.protocol import LogPage


def _write(line: str) -> None:
    sys.stdout.write(line + "\n")


def _all_pages(c: FetchmlClient, task_id: str, offset: int | None, tail: int | None) -> LogPage:
    """The first page, then every following one until a page comes back empty, merged."""
    page = c.logs.page(task_id, offset=offset, tail=tail)
    merged = page.model_copy(update={"lines": list(page.lines)})
    while page.lines and not page.done:
        page = c.logs.page(task_id, offset=page.next_offset)
        merged.lines.extend(page.lines)
        merged.next_offset, merged.status, merged.done = page.next_offset, page.status, page.done
    return merged


def exit_status(status: str, exit_code: int | None) -> int:
    """The shell status for a task that has ended: its exit code when it has one (a signal
    -N as 128+N, anything else outside 0..255 as 1), 0 for completed, 1 for failed."""
    if exit_code is not None:
        if exit_code < 0:
            return min(128 - exit_code, 255)
        if exit_code > 255:
            return EXIT_ERROR
        if exit_code != 0 or status == "completed":
            return exit_code
    return 0 if status == "completed" else EXIT_ERROR


@handle_errors
def logs(
    task_id: str = typer.Argument(..., help="Task id, as printed by submit or tasks."),
    follow: bool = typer.Option(
        False, "--follow", "-f", help="Keep printing new lines until the task ends, then exit."
    ),
    tail: int | None = typer.Option(
        None, "--tail", "-n", min=0, metavar="N", help="Start N lines before the end."
    ),
    offset: int | None = typer.Option(
        None,
        "--offset",
        min=0,
        metavar="N",
        help="Start at line N (0 is the first line of the first attempt).",
    ),
    exit_code: bool = typer.Option(
        False, "--exit-code", help="With --follow: exit with the task's exit code instead of 0."
    ),
    server: str | None = ServerOpt,
    api_key: str | None = ApiKeyOpt,
    as_json: bool = JsonOpt,
) -> None:
    """Print a task's log: every attempt's lines, in order.

    Without --follow, prints what there is now (all of it, page after page) and exits. With
    --follow, keeps printing lines as the worker sends them and exits when the task has ended.

    Examples:

      fetchml logs 3f2a9c0e --tail 20
      fetchml logs 3f2a9c0e -f --exit-code && echo trained
    """
    if tail is not None and offset is not None:
        fail("--tail and --offset: give one or the other", EXIT_USAGE)
    if follow and as_json:
        fail("--json prints one page; it cannot be combined with --follow", EXIT_USAGE)
    if exit_code and not follow:
        fail("--exit-code needs --follow", EXIT_USAGE)
    try:
        with client(server, api_key) as c:
            if not follow:
                page = _all_pages(c, task_id, offset, tail)
                if as_json:
                    print_json(page)
                else:
                    for line in page.lines:
                        _write(line)
                return
            for line in c.logs.follow(task_id, offset=offset, tail=tail):
                _write(line)
                sys.stdout.flush()
            if not exit_code:
                return
            task = c.tasks.get(task_id)
        sys.stdout.flush()
        raise typer.Exit(exit_status(task.status.value, task.exit_code))
    except BrokenPipeError:
        # `fetchml logs ID | head`: the reader has all it wanted. Quietly stop.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        raise typer.Exit(0) from None
