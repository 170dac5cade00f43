"""`fetchml watch` without TASK_ID: the scheduler's event stream, as JSON lines or as the live
board (admin keys)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from fetchml.cli.common import console
from fetchml.cli.watch_board import Board
from fetchml.cli.watch_output import ACTIVE, _print_event, _reconnecting, _say

if TYPE_CHECKING:
    from collections.abc import Iterator

    from fetchml.client import FetchmlClient
    from fetchml.client.streams import StreamEvent


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
