"""Runs a TUI poll (tui/feed.py's Poll) on a thread of its own until it has reported enough."""

from __future__ import annotations

import threading
import time

from fetchml.tui.feed import Poll


def collect(poll: Poll, got: list[object], until: int, timeout: float = 20.0) -> None:
    """Runs `poll` (which appends to `got`) until `got` holds `until` reports or `timeout`
    passes, then stops it: the stop must wake it at once."""
    t = threading.Thread(target=poll.run, daemon=True)
    t.start()
    deadline = time.monotonic() + timeout
    while len(got) < until and time.monotonic() < deadline:
        time.sleep(0.02)
    started = time.monotonic()
    poll.stop()
    t.join(5)
    assert not t.is_alive() and time.monotonic() - started < 2
