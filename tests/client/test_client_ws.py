"""fetchml.client.ws against real servers: refused handshakes raised as the client's usual
exceptions, a user's own task events arriving, `close()` from another thread ending the
iteration, pings answered (the idle close never comes), and a reconnect after a server restart
that calls `on_open` again so the caller can re-read."""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable
from typing import Any

import pytest

from fetchml.client import FetchmlClient
from fetchml.client.base import ServerUnreachableError
from fetchml.client.ws import TaskUpdates, ws_url
from fetchml.core.errors import ForbiddenError, UnauthorizedError
from tests.cli.conftest import unreachable_url
from tests.harness import Keys, ServerHandle, make_keys, wait_for
from tests.protocol_kit import submit

WAIT = 10.0


class Reader:
    """Iterates a TaskUpdates on a thread; payloads (or the error that ended it) on a queue."""

    def __init__(self, updates: TaskUpdates) -> None:
        self.updates = updates
        self.got: queue.Queue[dict[str, Any] | BaseException | None] = queue.Queue()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        try:
            for payload in self.updates:
                self.got.put(payload)
        except BaseException as exc:
            self.got.put(exc)
        else:
            self.got.put(None)  # the iteration ended

    def next(self, timeout: float = WAIT) -> dict[str, Any] | BaseException | None:
        return self.got.get(timeout=timeout)

    def until(self, found: Callable[[dict[str, Any]], bool], timeout: float = WAIT) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while True:
            item = self.next(max(0.01, deadline - time.monotonic()))
            assert isinstance(item, dict), item
            if found(item):
                return item




def test_ws_url() -> None:
    assert ws_url("http://127.0.0.1:9101") == "ws://127.0.0.1:9101/ws"
    assert ws_url("https://ml.example/fetchml/") == "wss://ml.example/fetchml/ws"


def test_refused_handshakes_raise_the_usual_exceptions(shared_server: ServerHandle, keys: Keys) -> None:
    drops: list[Exception] = []
    opened: list[int] = []

    def first(c: FetchmlClient) -> dict[str, Any]:
        with c.streams.updates(
            on_reconnect=lambda _n, e: drops.append(e), on_open=lambda: opened.append(1)
        ) as u:
            return next(iter(u))

    with shared_server.client("fml_not-a-key") as c, pytest.raises(UnauthorizedError) as bad:
        first(c)
    assert bad.value.trace_id and bad.value.code == "UNAUTHORIZED"
    with shared_server.client(keys.worker) as c, pytest.raises(ForbiddenError) as worker:
        first(c)
    assert worker.value.trace_id
    with FetchmlClient(unreachable_url(), keys.user, timeout=5) as c, pytest.raises(ServerUnreachableError):
        first(c)
    assert drops == [] and opened == []  # nothing that never opened is retried


def test_own_task_events_arrive_and_close_from_another_thread_ends_it(
    shared_server: ServerHandle, keys: Keys
) -> None:
    opened = threading.Event()
    with shared_server.client(keys.user) as c:
        updates = c.streams.updates(on_open=opened.set)
        reader = Reader(updates)
        assert opened.wait(WAIT)
        bobs = submit(shared_server, keys.other, "bobs")
        mine = submit(shared_server, keys.user, "mine")
        created = reader.next()
        # Bob's task came first on the feed: a user's socket carries only its own tasks.
        assert isinstance(created, dict), created
        assert created["type"] == "task_transition" and created["task_id"] == mine.id, created
        assert created["to"] == "queued" and created.get("from") is None and isinstance(created["id"], int)
        c.tasks.cancel(mine.id)
        ended = reader.until(lambda e: e["task_id"] == mine.id and e["type"] == "task_transition")
        assert ended["to"] == "failed" and ended["cancelled"] is True and ended["id"] > created["id"]

        # The reader is blocked in recv: close() from this thread ends its iteration quietly.
        assert reader.got.empty() and reader.thread.is_alive()
        updates.close()
        reader.thread.join(WAIT)
        assert not reader.thread.is_alive()
        assert reader.next(0) is None
        assert updates.opens == 1 and updates.reconnects == 0
    with shared_server.http(keys.admin) as http:
        http.delete(f"/v1/tasks/{bobs.id}")


def test_closing_before_the_first_message_and_twice_is_quiet(shared_server: ServerHandle, keys: Keys) -> None:
    with shared_server.client(keys.user) as c:
        updates = c.streams.updates()
        updates.close()
        assert list(updates) == []  # closed before it opened: no socket, no error
        updates.close()


@pytest.mark.slow
@pytest.mark.timeout(120)
def test_pings_are_answered_and_a_restart_reconnects_and_calls_on_open_again(
    server_factory: Callable[..., ServerHandle],
) -> None:
    # A ping every 0.2 s and an idle close after 1 s: only the pongs keep the socket open.
    srv = server_factory(FETCHML_WS_PING_SECONDS="0.2", FETCHML_WS_IDLE_SECONDS="1")
    k = make_keys(srv)
    opens = 0
    drops: list[Exception] = []
    restarted, stopped = threading.Event(), threading.Event()

    def on_open() -> None:
        nonlocal opens
        opens += 1

    def on_reconnect(attempt: int, exc: Exception) -> None:
        drops.append(exc)
        if not restarted.is_set():
            # The server says goodbye (1012) before its process is gone: start it once stopped,
            # and before the client retries.
            assert stopped.wait(30)
            srv.start()
            restarted.set()

    with srv.client(k.user) as c:
        updates = c.streams.updates(on_open=on_open, on_reconnect=on_reconnect, backoff=0.05)
        reader = Reader(updates)
        wait_for(lambda: updates.pongs >= 8, WAIT, "eight pings answered (1.6 s, past the 1 s idle close)", every=0.02)
        first = submit(srv, k.user, "first")
        got = reader.until(lambda e: e["task_id"] == first.id)
        assert got["to"] == "queued" and opens == 1 and drops == []

        srv.stop()
        stopped.set()
        wait_for(lambda: restarted.is_set() and opens == 2, 60, "the reconnect", every=0.02)
        after = submit(srv, k.user, "after")
        got = reader.until(lambda e: e["task_id"] == after.id)
        assert got["to"] == "queued" and updates.reconnects == len(drops) >= 1

        # A server that stays away: it gives up after its tries.
        updates.max_reconnects, updates.backoff = 2, 0.01
        tries = len(drops)
        srv.kill9()
        err = reader.next(30)
        assert isinstance(err, ServerUnreachableError), err
        assert len(drops) - tries == 2
        updates.close()
