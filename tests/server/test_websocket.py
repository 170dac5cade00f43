"""GET /ws over real sockets (docs/events.md): refusals before the upgrade in the envelope, the
browser subprotocol alternative, ping/pong and the idle close, own-tasks-only, `subscribe`,
task_complete for every way a task ends, and the per-key stream cap shared with SSE.

The client is the `websockets` library's sync client; every receive is bounded by a timeout.
"""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.sync.client import ClientConnection, connect
from websockets.typing import Subprotocol

from tests.harness import CONTRACT_CODES, ERROR_KEYS, Keys, ServerHandle, expect_error, make_keys
from tests.protocol_kit import FakeWorker, cancel_leftovers, submit

WAIT = 10.0  # the longest any single message may take to arrive


def ws_url(srv: ServerHandle) -> str:
    return f"ws://127.0.0.1:{srv.port}/ws"


def open_ws(srv: ServerHandle, key: str | None = None, **kw: Any) -> ClientConnection:
    headers = {"X-API-Key": key} if key is not None else {}
    return connect(ws_url(srv), additional_headers=headers, open_timeout=WAIT, close_timeout=2, **kw)


def refused(srv: ServerHandle, key: str | None = None, **kw: Any) -> InvalidStatus:
    with pytest.raises(InvalidStatus) as info, open_ws(srv, key, **kw):
        pass
    return info.value


def expect_denial(exc: InvalidStatus, status: int, code: str) -> dict[str, Any]:
    """The HTTP answer that refused the upgrade is the contract's error envelope."""
    resp = exc.response
    assert resp.status_code == status, (resp.status_code, resp.body)
    assert resp.headers.get("content-type", "").startswith("application/json"), resp.headers
    body = json.loads(bytes(resp.body or b""))
    assert isinstance(body, dict) and set(body) == ERROR_KEYS, body
    assert body["code"] == code and code in CONTRACT_CODES, body
    assert isinstance(body["error"], str) and body["error"], body
    assert isinstance(body["trace_id"], str) and body["trace_id"], body
    assert resp.headers.get("x-trace-id") == body["trace_id"], (resp.headers, body)
    return body  # type: ignore[no-any-return]


def recv(ws: ClientConnection, timeout: float = WAIT, *, skip: tuple[str, ...] = ("ping",)) -> dict[str, Any]:
    """The next message not of a type in `skip` (server pings arrive whenever they are due)."""
    deadline = time.monotonic() + timeout
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError(f"no message within {timeout}s")
        message = json.loads(ws.recv(timeout=left))
        assert isinstance(message, dict), message
        if message.get("type") not in skip:
            return message


def recv_until(
    ws: ClientConnection, found: Callable[[dict[str, Any]], bool], timeout: float = WAIT
) -> list[dict[str, Any]]:
    """Every message up to and including the first that `found` accepts."""
    deadline = time.monotonic() + timeout
    seen: list[dict[str, Any]] = []
    while True:
        message = recv(ws, max(deadline - time.monotonic(), 0.01))
        seen.append(message)
        if found(message):
            return seen


def set_priority(srv: ServerHandle, key: str, task_id: str, priority: int) -> None:
    with srv.http(key) as http:
        r = http.patch(f"/v1/scheduler/jobs/{task_id}/priority", json={"priority": priority})
        assert r.status_code == 200, r.text


def nothing_more(ws: ClientConnection, quiet: float = 0.3) -> None:
    """No message but pings arrives within `quiet` seconds."""
    with pytest.raises(TimeoutError):
        recv(ws, quiet)


# --- auth: refused before the upgrade -------------------------------------------------------


def test_bad_key_refused_before_upgrade(shared_server: ServerHandle, keys: Keys) -> None:
    expect_denial(refused(shared_server, "fml_not-a-real-key"), 401, "UNAUTHORIZED")


def test_missing_key_refused(shared_server: ServerHandle, keys: Keys) -> None:
    body = expect_denial(refused(shared_server), 401, "UNAUTHORIZED")
    assert "key" in body["error"].lower()


def test_worker_key_forbidden(shared_server: ServerHandle, keys: Keys) -> None:
    expect_denial(refused(shared_server, keys.worker), 403, "FORBIDDEN")


def test_denial_leaks_nothing_and_key_not_echoed(shared_server: ServerHandle, keys: Keys) -> None:
    bad = "fml_secret-looking-value-123"
    exc = refused(shared_server, bad)
    text = bytes(exc.response.body or b"").decode()
    assert bad not in text
    assert "Traceback" not in text and ".py" not in text


@pytest.mark.parametrize("role", ["user", "admin"])
def test_header_key_connects(shared_server: ServerHandle, keys: Keys, role: str) -> None:
    with open_ws(shared_server, keys.user if role == "user" else keys.admin) as ws:
        ws.send(json.dumps({"type": "ping"}))
        assert recv(ws) == {"type": "pong"}
        # No subprotocol offered: none is chosen.
        assert ws.subprotocol is None


def test_browser_subprotocol_alternative(shared_server: ServerHandle, keys: Keys) -> None:
    offered = [Subprotocol("fetchml"), Subprotocol(f"fetchml.key.{keys.user}")]
    with connect(ws_url(shared_server), subprotocols=offered, open_timeout=WAIT) as ws:
        # The server picks the plain protocol: the key is never echoed back in a response header.
        assert ws.subprotocol == "fetchml"
        assert ws.response is not None
        assert keys.user not in str(ws.response.headers)
        ws.send(json.dumps({"type": "ping"}))
        assert recv(ws) == {"type": "pong"}


def test_browser_subprotocol_wrong_key(shared_server: ServerHandle, keys: Keys) -> None:
    exc = refused(shared_server, subprotocols=["fetchml", "fetchml.key.fml_wrong"])
    expect_denial(exc, 401, "UNAUTHORIZED")
    assert "fml_wrong" not in bytes(exc.response.body or b"").decode()


def test_browser_subprotocol_worker_key_forbidden(shared_server: ServerHandle, keys: Keys) -> None:
    exc = refused(shared_server, subprotocols=["fetchml", f"fetchml.key.{keys.worker}"])
    expect_denial(exc, 403, "FORBIDDEN")


def test_plain_http_get_is_not_a_websocket(shared_server: ServerHandle, keys: Keys) -> None:
    r = httpx.get(shared_server.url + "/ws", headers={"X-API-Key": keys.user}, timeout=WAIT)
    expect_error(r, 405, "BAD_REQUEST")


# --- ping, pong, idle close ------------------------------------------------------------------


@pytest.fixture
def quick(server_factory: Callable[..., ServerHandle]) -> Iterator[tuple[ServerHandle, Keys]]:
    """Pings every 0.5 s, idle close after 1.5 s, at most 2 streams per key."""
    srv = server_factory(
        FETCHML_WS_PING_SECONDS="0.5",
        FETCHML_WS_IDLE_SECONDS="1.5",
        FETCHML_MAX_STREAMS_PER_KEY="2",
        FETCHML_STREAM_KEEPALIVE_SECONDS="0.5",
        FETCHML_RATE_LIMIT_PER_MINUTE="100000",
    )
    yield srv, make_keys(srv)


def test_server_pings_and_client_ping_gets_pong(quick: tuple[ServerHandle, Keys]) -> None:
    srv, k = quick
    with open_ws(srv, k.user) as ws:
        assert recv(ws, 5, skip=()) == {"type": "ping"}
        ws.send(json.dumps({"type": "pong"}))
        ws.send(json.dumps({"type": "ping"}))
        assert recv(ws, 5) == {"type": "pong"}
        # A pong is an answer, not a request: it gets none.
        ws.send(json.dumps({"type": "pong"}))
        nothing_more(ws)


def test_silent_client_closed_after_idle(quick: tuple[ServerHandle, Keys]) -> None:
    srv, k = quick
    with open_ws(srv, k.user) as ws:
        started = time.monotonic()
        with pytest.raises(ConnectionClosed):
            for _ in range(100):  # a ping each 0.5 s until the close
                ws.recv(timeout=5)
        waited = time.monotonic() - started
        assert ws.close_code == 4408, ws.close_code
        assert ws.close_reason
        # Not before the idle limit (the server's clock started at accept, a little earlier).
        assert 1.0 <= waited < 15.0, waited


def test_client_answering_pings_stays_open(quick: tuple[ServerHandle, Keys]) -> None:
    srv, k = quick
    with open_ws(srv, k.user) as ws:
        started = time.monotonic()
        pings = 0
        while time.monotonic() - started < 3.5:  # more than twice the idle limit
            message = json.loads(ws.recv(timeout=5))
            if message == {"type": "ping"}:
                pings += 1
                ws.send(json.dumps({"type": "pong"}))
        assert pings >= 4
        ws.send(json.dumps({"type": "ping"}))
        assert recv(ws, 5) == {"type": "pong"}
        assert ws.close_code is None


# --- own tasks only --------------------------------------------------------------------------


def test_user_sees_only_own_tasks(shared_server: ServerHandle, keys: Keys) -> None:
    with open_ws(shared_server, keys.user) as ws:
        bobs = submit(shared_server, keys.other, "bobs")
        alices = submit(shared_server, keys.user, "alices")
        # Bob's task was committed first: had it reached alice, it would come first.
        first = recv(ws)
        assert first["type"] == "task_update", first
        event = first["event"]
        assert event["task_id"] == alices.id, (event, bobs.id)
        assert event["type"] == "task_transition" and event["to"] == "queued"
        assert event["user_id"] == "alice" and event["job_name"] == "alices"
        assert isinstance(event["id"], int) and event["at"]
        # Bob changes his task again: still nothing for alice, as her next own event shows.
        set_priority(shared_server, keys.other, bobs.id, 9)
        set_priority(shared_server, keys.user, alices.id, 8)
        second = recv(ws)
        assert second["event"]["task_id"] == alices.id, second
        assert second["event"]["type"] == "priority_changed"
        assert (second["event"]["from"], second["event"]["to"]) == (5, 8)
        assert second["event"]["id"] > event["id"]


def test_admin_sees_every_task(shared_server: ServerHandle, keys: Keys) -> None:
    with open_ws(shared_server, keys.admin) as ws:
        bobs = submit(shared_server, keys.other, "bobs")
        alices = submit(shared_server, keys.user, "alices")
        got = [recv(ws), recv(ws)]
        assert [m["event"]["task_id"] for m in got] == [bobs.id, alices.id], got
        assert [m["event"]["user_id"] for m in got] == ["bob", "alice"]
        # Only task events travel on /ws: no queue_depth or worker events in between.
        assert {m["event"]["type"] for m in got} == {"task_transition"}


# --- subscribe -------------------------------------------------------------------------------


def test_subscribe_narrows_then_widens(shared_server: ServerHandle, keys: Keys) -> None:
    one = submit(shared_server, keys.user, "one")
    two = submit(shared_server, keys.user, "two")
    with open_ws(shared_server, keys.user) as ws:
        ws.send(json.dumps({"type": "subscribe", "task_ids": [two.id]}))
        assert recv(ws) == {"type": "subscribed", "task_ids": [two.id]}
        set_priority(shared_server, keys.user, one.id, 2)
        set_priority(shared_server, keys.user, two.id, 3)
        got = recv(ws)
        assert got["event"]["task_id"] == two.id, got
        assert got["event"]["to"] == 3

        ws.send(json.dumps({"type": "subscribe", "task_ids": None}))
        assert recv(ws) == {"type": "subscribed", "task_ids": None}
        set_priority(shared_server, keys.user, one.id, 4)
        got = recv(ws)
        assert got["event"]["task_id"] == one.id, got
        assert got["event"]["to"] == 4


def test_subscribe_to_someone_elses_task_shows_nothing(shared_server: ServerHandle, keys: Keys) -> None:
    bobs = submit(shared_server, keys.other, "bobs")
    mine = submit(shared_server, keys.user, "mine")
    with open_ws(shared_server, keys.user) as ws:
        ws.send(json.dumps({"type": "subscribe", "task_ids": [bobs.id, mine.id]}))
        assert recv(ws) == {"type": "subscribed", "task_ids": sorted([bobs.id, mine.id])}
        set_priority(shared_server, keys.other, bobs.id, 2)
        set_priority(shared_server, keys.user, mine.id, 2)
        got = recv(ws)
        assert got["event"]["task_id"] == mine.id, got


def test_subscribe_empty_list_hears_nothing(shared_server: ServerHandle, keys: Keys) -> None:
    mine = submit(shared_server, keys.user, "mine")
    with open_ws(shared_server, keys.user) as ws:
        ws.send(json.dumps({"type": "subscribe", "task_ids": []}))
        assert recv(ws) == {"type": "subscribed", "task_ids": []}
        set_priority(shared_server, keys.user, mine.id, 7)
        # The ping answers after the priority change was committed and published.
        ws.send(json.dumps({"type": "ping"}))
        assert recv(ws) == {"type": "pong"}
        nothing_more(ws)


@pytest.mark.parametrize(
    "raw",
    [
        "not json",
        "[1, 2]",
        "null",
        '"ping"',
        "{}",
        '{"type": "dance"}',
        '{"type": "subscribe", "task_ids": "abc"}',
        '{"type": "subscribe", "task_ids": [1, 2]}',
        '{"type": "subscribe", "task_ids": {"a": 1}}',
        b"\x00\x01binary",
    ],
)
def test_bad_message_gets_error_and_socket_stays_open(
    shared_server: ServerHandle, keys: Keys, raw: str | bytes
) -> None:
    with open_ws(shared_server, keys.user) as ws:
        ws.send(raw)
        got = recv(ws)
        assert got["type"] == "error" and got["code"] == "BAD_REQUEST", got
        assert isinstance(got["error"], str) and got["error"]
        ws.send(json.dumps({"type": "ping"}))
        assert recv(ws) == {"type": "pong"}


def test_subscribe_too_many_ids_is_an_error(shared_server: ServerHandle, keys: Keys) -> None:
    with open_ws(shared_server, keys.user) as ws:
        ws.send(json.dumps({"type": "subscribe", "task_ids": [f"t{i}" for i in range(1001)]}))
        got = recv(ws)
        assert got["type"] == "error" and got["code"] == "BAD_REQUEST", got
        # The earlier feed (everything) is kept.
        mine = submit(shared_server, keys.user, "mine")
        assert recv(ws)["event"]["task_id"] == mine.id


# --- task_complete -----------------------------------------------------------------------------


def complete_message(ws: ClientConnection, task_id: str) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    seen = recv_until(ws, lambda m: m.get("type") == "task_complete" and m.get("task_id") == task_id)
    return seen[:-1], seen[-1]


def test_cancelled_task_completes_as_cancelled(shared_server: ServerHandle, keys: Keys) -> None:
    with open_ws(shared_server, keys.user) as ws:
        task = submit(shared_server, keys.user, "to-cancel")
        with shared_server.http(keys.user) as http:
            assert http.delete(f"/v1/tasks/{task.id}").status_code == 204
        before, done = complete_message(ws, task.id)
        # The terminal task_update comes right before it, with the same event id.
        last = before[-1]
        assert last["type"] == "task_update" and last["event"]["to"] == "failed", last
        assert last["event"]["cancelled"] is True
        assert done["event_id"] == last["event"]["id"]
        assert done["status"] == "failed" and done["outcome"] == "cancelled", done
        assert done["user_id"] == "alice" and done["job_name"] == "to-cancel"
        assert "exit_code" not in done


@pytest.mark.parametrize(("final", "exit_code"), [("completed", 0), ("failed", 3)])
def test_worker_run_completes_with_exit_code(
    shared_server: ServerHandle, keys: Keys, workers: list[FakeWorker], final: str, exit_code: int
) -> None:
    cancel_leftovers(shared_server, keys.admin)  # so that the worker claims this test's task
    w = FakeWorker(shared_server, keys.worker)
    workers.append(w)
    w.register()
    with open_ws(shared_server, keys.user) as ws:
        task = submit(shared_server, keys.user, f"to-{final}")
        a = w.must_claim()
        assert a.task.id == task.id
        # A run completes only after collecting its outputs; it may fail from running.
        path = ["running", "collecting", final] if final == "completed" else ["running", final]
        w.run_to(a, *path, exit_code=exit_code)
        before, done = complete_message(ws, task.id)
        transitions = [
            (m["event"].get("from"), m["event"]["to"])
            for m in before
            if m["event"]["task_id"] == task.id and m["event"]["type"] == "task_transition"
        ]
        statuses = ["queued", "preparing", *path]
        assert transitions == list(zip([None, *statuses[:-1]], statuses, strict=True))
        assert done["status"] == final and done["outcome"] == final, done
        assert done["exit_code"] == exit_code
        assert done["event_id"] == before[-1]["event"]["id"]
        if final == "failed":
            assert done["error"]


# --- the per-key cap ---------------------------------------------------------------------------


def connect_when_free(srv: ServerHandle, key: str, timeout: float = WAIT) -> ClientConnection:
    """A slot frees once the server has seen the close; until then the cap may still refuse."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            return open_ws(srv, key)
        except InvalidStatus as exc:
            if exc.response.status_code != 429 or time.monotonic() > deadline:
                raise
        time.sleep(0.05)


def test_third_websocket_refused_then_freed(quick: tuple[ServerHandle, Keys]) -> None:
    srv, k = quick
    with contextlib.ExitStack() as stack:
        first = stack.enter_context(open_ws(srv, k.user))
        stack.enter_context(open_ws(srv, k.user))
        body = expect_denial(refused(srv, k.user), 429, "RATE_LIMITED")
        assert "stream" in body["error"]
        # The cap is per key: another key of the same server is not affected.
        stack.enter_context(open_ws(srv, k.other))
        first.close()
        third = stack.enter_context(connect_when_free(srv, k.user))
        third.send(json.dumps({"type": "ping"}))
        assert recv(third) == {"type": "pong"}


def test_cap_counts_sse_and_websockets_together(quick: tuple[ServerHandle, Keys]) -> None:
    srv, k = quick
    task = submit(srv, k.user, "watched")
    with httpx.Client(base_url=srv.url, headers={"X-API-Key": k.user}, timeout=WAIT) as http:
        with http.stream("GET", f"/v1/scheduler/jobs/{task.id}/stream") as sse:
            assert sse.status_code == 200
            lines = sse.iter_lines()
            assert next(lines).startswith("retry:")  # the stream is open and counted
            with open_ws(srv, k.user) as ws:
                exc = refused(srv, k.user)
                assert exc.response.headers.get("retry-after")
                expect_denial(exc, 429, "RATE_LIMITED")
                # ... and an SSE stream is refused while the WebSocket holds the other slot.
                r = http.get(f"/v1/scheduler/jobs/{task.id}/stream")
                assert r.status_code == 429 and r.json()["code"] == "RATE_LIMITED", r.text
                ws.send(json.dumps({"type": "ping"}))
                assert recv(ws) == {"type": "pong"}
        # The SSE stream is closed: a WebSocket gets its slot.
        with connect_when_free(srv, k.user) as ws, open_ws(srv, k.user) as ws2:
            for sock in (ws, ws2):
                sock.send(json.dumps({"type": "ping"}))
                assert recv(sock) == {"type": "pong"}


def test_refused_upgrades_hold_no_slot(quick: tuple[ServerHandle, Keys]) -> None:
    """Many refused attempts (429) must not leak slots: the two allowed still open afterwards."""
    srv, k = quick
    with open_ws(srv, k.user), open_ws(srv, k.user):
        for _ in range(5):
            expect_denial(refused(srv, k.user), 429, "RATE_LIMITED")
    with connect_when_free(srv, k.user), connect_when_free(srv, k.user):
        pass
