"""fetchml.client.streams against real servers: resuming with Last-Event-ID after the server
dies and comes back (no gap, no duplicate), giving up after its tries, and the refusals before a
stream starts raised as the client's usual exceptions."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest

from fetchml.client import FetchmlClient
from fetchml.client.base import ServerUnreachableError
from fetchml.client.streams import StreamEvent, parse_sse
from fetchml.core.errors import ForbiddenError, NotFoundError, RateLimitedError, UnauthorizedError
from tests.cli.conftest import unreachable_url
from tests.harness import Keys, ServerHandle, make_keys
from tests.protocol_kit import submit


def take(events: Iterator[StreamEvent], n: int) -> list[StreamEvent]:
    return [next(events) for _ in range(n)]


def test_parse_sse_follows_the_spec() -> None:
    lines = [
        "retry: 2000",
        "",
        ": keep-alive",
        "",
        "id: 7",
        "event: queue_depth",
        'data: {"depth":',
        "data: 1}",
        "",
        "event: end",
        "data:{}",
        "",
        "data: x",  # no blank line after it: never dispatched
    ]
    assert list(parse_sse(lines)) == [("queue_depth", '{"depth":\n1}', "7"), ("end", "{}", None)]


@pytest.mark.slow
@pytest.mark.timeout(120)
def test_a_stream_resumes_after_the_server_restarts_with_no_gap_and_no_duplicate(
    server_factory: Callable[..., ServerHandle],
) -> None:
    srv = server_factory(FETCHML_RATE_LIMIT_PER_MINUTE="100000", FETCHML_MAX_STREAMS_PER_KEY="1")
    k = make_keys(srv)
    missed: list[str] = []
    drops: list[Exception] = []

    def on_reconnect(attempt: int, exc: Exception) -> None:
        drops.append(exc)
        if not missed:
            # The server is back before the client reconnects, and a task is submitted while
            # no stream is open: only the replay can bring its events.
            srv.start()
            missed.append(submit(srv, k.user, "while-away").id)

    with FetchmlClient(srv.url, k.admin, timeout=10) as c:
        stream = c.streams.scheduler(
            backoff=0.05, max_reconnects=20, read_timeout=20, on_reconnect=on_reconnect
        )
        events = iter(stream)
        snap = next(events)
        assert snap.event == "snapshot" and snap.id == snap.data["last_event_id"]
        before = submit(srv, k.user, "before").id
        got = take(events, 2)
        assert [e.event for e in got] == ["task_transition", "queue_depth"]
        assert stream.last_event_id == got[-1].id

        srv.kill9()
        got += take(events, 2)  # replayed after the reconnect: no snapshot
        assert missed and drops and isinstance(drops[0], ServerUnreachableError)
        after = submit(srv, k.user, "after").id
        got += take(events, 2)  # live again

        assert [e.id for e in got] == list(range(snap.id + 1, snap.id + 7))  # no gap, none twice
        assert [e.event for e in got] == ["task_transition", "queue_depth"] * 3
        assert [e.data["task_id"] for e in got if e.event == "task_transition"] == [before, missed[0], after]
        assert [e.data["depth"] for e in got if e.event == "queue_depth"] == [1, 2, 3]
        assert stream.reconnects == len(drops) >= 1

        # The resumed stream holds this key's only slot (FETCHML_MAX_STREAMS_PER_KEY=1): a second
        # one is refused before it starts, and is not retried.
        with pytest.raises(RateLimitedError) as refused:
            next(iter(c.streams.scheduler(on_reconnect=on_reconnect)))
        assert refused.value.retry_after >= 1 and len(drops) == stream.reconnects

        # A server that stays away: the stream gives up after its tries.
        tries = len(drops)
        stream.max_reconnects, stream.backoff = 2, 0.01
        srv.kill9()
        with pytest.raises(ServerUnreachableError):
            next(events)
        assert len(drops) - tries == 2
        stream.close()


def test_refusals_before_the_stream_starts(shared_server: ServerHandle, keys: Keys) -> None:
    drops: list[Exception] = []

    def first(c: FetchmlClient, *, job: str | None = None) -> StreamEvent:
        s = (
            c.streams.job(job, on_reconnect=lambda _n, e: drops.append(e))
            if job
            else c.streams.scheduler(on_reconnect=lambda _n, e: drops.append(e))
        )
        with s:
            return next(iter(s))

    with shared_server.client(keys.user) as c:
        with pytest.raises(ForbiddenError) as forbidden:
            first(c)
        assert forbidden.value.trace_id
        with pytest.raises(NotFoundError):
            first(c, job="0" * 32)
        task = submit(shared_server, keys.user, "mine")
        snap = first(c, job=task.id)
        assert snap.event == "snapshot" and snap.data["task"]["id"] == task.id
    with shared_server.client("fml_not-a-key") as c, pytest.raises(UnauthorizedError):
        first(c)
    with FetchmlClient(unreachable_url(), keys.admin, timeout=5) as c, pytest.raises(ServerUnreachableError):
        first(c)
    assert drops == []  # nothing that never started is retried
    with shared_server.http(keys.admin) as http:
        http.delete(f"/v1/tasks/{task.id}")


def test_the_job_stream_ends_with_end(shared_server: ServerHandle, keys: Keys) -> None:
    task = submit(shared_server, keys.user, "ends")
    with shared_server.http(keys.user) as http:
        assert http.delete(f"/v1/tasks/{task.id}").status_code == 204
    with shared_server.client(keys.user) as c:
        got = list(c.streams.job(task.id))  # ends by itself
    assert [e.event for e in got] == ["snapshot", "end"]
    assert got[1].id is None and got[1].data["outcome"] == "cancelled" and got[1].data["task_id"] == task.id
