"""Resume at the edge of the replay window: the events table keeps up to one prune interval more
than FETCHML_EVENT_REPLAY_WINDOW, and a resume from one of those extra rows once replayed only
the first `window` events and then went live: the rest were a silent gap. Now the window is
measured from the newest event: a resume within it replays everything, one outside it gets a
fresh snapshot."""

from __future__ import annotations

from collections.abc import Callable

from tests.harness import ServerHandle, make_keys
from tests.sse_kit import SseReader

STATUS = "/v1/scheduler/status/stream"
WINDOW = 100


def test_resume_from_a_kept_row_older_than_the_window_is_a_snapshot_not_a_gap(
    server_factory: Callable[..., ServerHandle],
) -> None:
    srv = server_factory(FETCHML_EVENT_REPLAY_WINDOW=str(WINDOW), FETCHML_RATE_LIMIT_PER_MINUTE="100000")
    k = make_keys(srv)
    with srv.http(k.user) as http:
        for i in range(160):  # 320 events: pruned at 256, so rows older than the window remain
            assert http.post("/v1/tasks", json={"job_name": f"n{i}", "entrypoint": "t.py"}).status_code == 201
    oldest, newest = srv.db_exec("SELECT min(id), max(id) FROM events")[0]
    assert newest - oldest > WINDOW, (oldest, newest)  # the case this test is about

    # Just inside the window: every event after it, in order, with no snapshot.
    start = newest - WINDOW
    with SseReader(srv, k.admin, STATUS, last_event_id=start) as sse:
        frames = sse.until(lambda f: f.id == newest)
        assert [f.id for f in frames] == list(range(start + 1, newest + 1))
        assert all(f.event != "snapshot" for f in frames)
        # ... and then live, with no gap after the replay.
        with srv.http(k.user) as http:
            assert http.post("/v1/tasks", json={"job_name": "live", "entrypoint": "t.py"}).status_code == 201
        assert sse.next().id == newest + 1

    # A row the table still holds, but further back than the window: a fresh snapshot.
    for asked in (oldest, newest - WINDOW - 1):
        with SseReader(srv, k.admin, STATUS, last_event_id=asked) as sse:
            snap = sse.next()
        assert snap.event == "snapshot" and snap.data is not None, snap
        assert snap.data["reason"] == "outside_replay_window"
        assert snap.id == snap.data["last_event_id"] >= newest + 1
