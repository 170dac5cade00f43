"""GET /metrics: Prometheus text on real servers. Values after a known sequence of actions, the
route-template labels, the access rules, and two servers on one PostgreSQL database reporting the
same database-wide gauges."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from fetchml.core.enums import Role
from fetchml.server.metrics import ServerMetrics
from fetchml.services.metrics import ClusterMetrics
from tests.harness import Keys, ServerHandle, expect_error, make_keys, servers_on_one_database
from tests.protocol_kit import FakeWorker, submit

FAST = {"FETCHML_RATE_LIMIT_PER_MINUTE": "100000"}
# The families every server reports about its database: the same on every server of one database.
DATABASE_WIDE = (
    "fetchml_tasks",
    "fetchml_queue_depth",
    "fetchml_workers",
    "fetchml_gpus",
    "fetchml_gpus_allocated",
    "fetchml_audit_chain_length",
)

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def scrape_text(srv: ServerHandle, key: str | None) -> str:
    with srv.http(key) as http:
        r = http.get("/metrics")
    assert r.status_code == 200, r.text
    assert r.headers["content-type"].startswith("text/plain"), r.headers
    return r.text


def parse(text: str, *families: str) -> Samples:
    """{(sample name, labels): value}, optionally only of the named families."""
    out: Samples = {}
    for fam in text_string_to_metric_families(text):
        if families and fam.name not in families:
            continue
        for s in fam.samples:
            out[(s.name, frozenset(s.labels.items()))] = s.value
    return out


def scrape(srv: ServerHandle, key: str | None, *families: str) -> Samples:
    return parse(scrape_text(srv, key), *families)


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples[(name, frozenset(labels.items()))]


def chain_length(srv: ServerHandle, admin: str) -> int:
    with srv.http(admin) as http:
        return int(http.get("/v1/audit/chain-root").json()["total_events"])


def test_values_after_a_known_sequence(
    server_factory: Callable[..., ServerHandle], workers: list[FakeWorker]
) -> None:
    srv = server_factory(**FAST)
    k = make_keys(srv)

    empty = scrape(srv, k.admin)
    for status in ("queued", "preparing", "running", "collecting", "completed", "failed"):
        assert value(empty, "fetchml_tasks", status=status) == 0
    for priority in range(1, 11):
        assert value(empty, "fetchml_queue_depth", priority=str(priority)) == 0
    for status in ("active", "draining", "offline"):
        assert value(empty, "fetchml_workers", status=status) == 0
    assert value(empty, "fetchml_gpus") == 0
    assert value(empty, "fetchml_gpus_allocated") == 0
    assert value(empty, "fetchml_task_start_latency_seconds_count") == 0
    assert value(empty, "fetchml_sse_connections") == 0
    assert value(empty, "fetchml_websocket_connections") == 0

    # Four tasks; the GPU one has the top priority, so it is the one a one-slot worker takes.
    big = submit(srv, k.user, "big", gpu=2, priority=7)
    mid1 = submit(srv, k.user, "mid1", priority=5)
    submit(srv, k.user, "mid2", priority=5)
    low = submit(srv, k.user, "low", priority=3)
    w = FakeWorker(srv, k.worker)
    workers.append(w)
    worker_id = w.register(gpus=[0, 1, 2, 3], gpu_type="A100", batch_slots=1).worker_id
    a = w.must_claim()
    assert a.task.id == big.id
    w.report(a, "running")
    w.report(a, "running")  # a repeated report changes nothing: still one start observed
    with srv.http(k.user) as http:
        assert http.delete(f"/v1/tasks/{low.id}").status_code == 204

    s = scrape(srv, k.admin)
    expected = {"queued": 2, "preparing": 0, "running": 1, "collecting": 0, "completed": 0, "failed": 1}
    assert {st: value(s, "fetchml_tasks", status=st) for st in expected} == expected
    assert value(s, "fetchml_queue_depth", priority="5") == 2
    assert value(s, "fetchml_queue_depth", priority="3") == 0  # cancelled
    assert value(s, "fetchml_queue_depth", priority="7") == 0  # running
    assert value(s, "fetchml_workers", status="active") == 1
    assert value(s, "fetchml_gpus") == 4
    assert value(s, "fetchml_gpus_allocated") == 2
    assert value(s, "fetchml_task_start_latency_seconds_count") == 1
    assert value(s, "fetchml_task_start_latency_seconds_sum") >= 0
    assert value(s, "fetchml_task_start_latency_seconds_bucket", le="+Inf") == 1
    assert value(s, "fetchml_audit_chain_length") == chain_length(srv, k.admin)

    # The GPU task ends and frees its GPUs; the next one starts: a second observation.
    w.run_to(a, "collecting", "completed")
    b = w.must_claim()
    assert b.task.id == mid1.id
    w.report(b, "running")
    s = scrape(srv, k.admin)
    assert value(s, "fetchml_tasks", status="completed") == 1
    assert value(s, "fetchml_tasks", status="running") == 1
    assert value(s, "fetchml_tasks", status="queued") == 1
    assert value(s, "fetchml_queue_depth", priority="5") == 1
    assert value(s, "fetchml_gpus_allocated") == 0
    assert value(s, "fetchml_task_start_latency_seconds_count") == 2
    assert value(s, "fetchml_audit_chain_length") == chain_length(srv, k.admin)

    # An end that says the attempt started (it ended within the worker's running-report window),
    # sent with the next claim: that start is observed too, once.
    c = w.end_and_claim(b, "completed", exit_code=0)
    assert c is not None and value(scrape(srv, k.admin), "fetchml_task_start_latency_seconds_count") == 2
    assert w.end_and_claim(c, "completed", exit_code=0, started=True) is None
    s = scrape(srv, k.admin)
    assert value(s, "fetchml_task_start_latency_seconds_count") == 3
    assert value(s, "fetchml_tasks", status="completed") == 3

    # A drained worker is counted as draining, and its GPUs still count until it goes offline.
    with srv.http(k.admin) as http:
        r = http.delete(f"/v1/scheduler/workers/{worker_id}")
        assert r.status_code == 204, r.text
    s = scrape(srv, k.admin)
    assert value(s, "fetchml_workers", status="draining") == 1
    assert value(s, "fetchml_workers", status="active") == 0
    assert value(s, "fetchml_gpus") == 4


def test_requests_are_counted_by_route_template(server_factory: Callable[..., ServerHandle]) -> None:
    srv = server_factory(**FAST)
    k = make_keys(srv)
    task = submit(srv, k.user, "templated")
    with srv.http(k.user) as http:
        for _ in range(3):
            assert http.get(f"/v1/tasks/{task.id}").status_code == 200
        assert http.get("/v1/tasks/no-such-task").status_code == 404
        for path in ("/no/such/path", "/v1/tasks/x/y/z/w", "/another-random-path"):
            assert http.get(path).status_code == 404
    with srv.http() as anon:
        assert anon.get(f"/v1/tasks/{task.id}").status_code == 401

    text = scrape_text(srv, k.admin)
    # Raw paths never become labels.
    assert task.id not in text and "no-such-task" not in text and "/no/such/path" not in text
    s = parse(text, "fetchml_http_requests", "fetchml_http_request_duration_seconds")
    route = "/v1/tasks/{task_id}"
    req = "fetchml_http_requests_total"
    assert value(s, req, route=route, method="GET", status="200") == 3
    assert value(s, req, route=route, method="GET", status="404") == 1
    assert value(s, req, route=route, method="GET", status="401") == 1
    assert value(s, req, route="/v1/tasks", method="POST", status="201") == 1
    assert value(s, req, route="unmatched", method="unmatched", status="404") == 3
    dur = "fetchml_http_request_duration_seconds"
    assert value(s, f"{dur}_count", route=route, method="GET") == 5
    assert value(s, f"{dur}_bucket", route=route, method="GET", le="+Inf") == 5
    assert value(s, f"{dur}_sum", route=route, method="GET") > 0
    routes = {dict(labels)["route"] for (name, labels) in s if name == req}
    # /health: the harness polls it while the server starts.
    assert routes <= {route, "/v1/tasks", "unmatched", "/metrics", "/health"}, routes

    # The scrape before this one is counted too, under its own route.
    s = scrape(srv, k.admin, "fetchml_http_requests")
    assert value(s, req, route="/metrics", method="GET", status="200") >= 1


def test_access_admin_only_by_default(shared_server: ServerHandle, keys: Keys) -> None:
    scrape_text(shared_server, keys.admin)
    for key in (keys.user, keys.worker):
        with shared_server.http(key) as http:
            expect_error(http.get("/metrics"), 403, "FORBIDDEN")
    with shared_server.http() as http:
        expect_error(http.get("/metrics"), 401, "UNAUTHORIZED")
    with shared_server.http("fml_not-a-real-key") as http:
        expect_error(http.get("/metrics"), 401, "UNAUTHORIZED")


def test_public_setting_lets_requests_without_a_key_in(server_factory: Callable[..., ServerHandle]) -> None:
    srv = server_factory(FETCHML_METRICS_PUBLIC="true", **FAST)
    user = srv.make_key("alice", Role.USER)
    admin = srv.make_key("root", Role.ADMIN)
    assert "fetchml_tasks" in scrape_text(srv, None)
    assert "fetchml_tasks" in scrape_text(srv, user)
    assert "fetchml_tasks" in scrape_text(srv, admin)
    # A key that is sent is still checked: a wrong one is refused, not ignored.
    with srv.http("fml_not-a-real-key") as http:
        expect_error(http.get("/metrics"), 401, "UNAUTHORIZED")


def test_public_metrics_keep_the_rate_limit(server_factory: Callable[..., ServerHandle]) -> None:
    srv = server_factory(FETCHML_METRICS_PUBLIC="true", FETCHML_RATE_LIMIT_PER_MINUTE="3")
    with srv.http() as http:
        statuses = [http.get("/metrics").status_code for _ in range(6)]
        assert statuses[:3] == [200, 200, 200], statuses
        body = expect_error(http.get("/metrics"), 429, "RATE_LIMITED")
        assert body["error"]


def test_stream_gauges_follow_the_helper() -> None:
    """The helper stream code wraps each SSE stream or WebSocket in (one app's own registry)."""
    m = ServerMetrics()
    other = ServerMetrics()  # a second app in the same process: its own counts
    cluster = ClusterMetrics()

    def gauges(metrics: ServerMetrics) -> tuple[float, float]:
        s = parse(metrics.render(cluster).decode())
        return value(s, "fetchml_sse_connections"), value(s, "fetchml_websocket_connections")

    with m.open_stream("sse"), m.open_stream("sse"), m.open_stream("websocket"):
        assert gauges(m) == (2, 1)
        assert gauges(other) == (0, 0)
    assert gauges(m) == (0, 0)
    with pytest.raises(RuntimeError), m.open_stream("websocket"):
        raise RuntimeError("the stream broke")
    assert gauges(m) == (0, 0)


def test_two_servers_on_one_database_report_the_same_database_gauges(
    tmp_path: Path, workers: list[FakeWorker]
) -> None:
    with servers_on_one_database(tmp_path, env=FAST) as (a, b):
        k = make_keys(a)
        for i in range(3):
            submit(a, k.user, f"on-a-{i}", priority=6)
        submit(b, k.user, "on-b", priority=4)
        w = FakeWorker(b, k.worker)  # registers and claims through B
        workers.append(w)
        w.register(gpus=[0, 1], batch_slots=1)
        w.report(w.must_claim(), "running")

        sa, sb = scrape(a, k.admin), scrape(b, k.admin)
        db_a = {key: v for key, v in sa.items() if key[0] in DATABASE_WIDE}
        db_b = {key: v for key, v in sb.items() if key[0] in DATABASE_WIDE}
        assert db_a == db_b
        assert value(sa, "fetchml_tasks", status="queued") == 3  # one of the four runs
        assert value(sa, "fetchml_tasks", status="running") == 1
        assert value(sa, "fetchml_queue_depth", priority="6") == 2  # the top one was placed
        assert value(sa, "fetchml_queue_depth", priority="4") == 1
        assert value(sa, "fetchml_workers", status="active") == 1
        assert value(sa, "fetchml_gpus") == 2

        # Per-process series: each server counted what it served, nothing more.
        req = "fetchml_http_requests_total"
        assert value(sa, req, route="/v1/tasks", method="POST", status="201") == 3
        assert value(sb, req, route="/v1/tasks", method="POST", status="201") == 1
        assert value(sb, "fetchml_task_start_latency_seconds_count") == 1
        assert value(sa, "fetchml_task_start_latency_seconds_count") == 0


def test_metrics_route_is_in_the_schema(shared_server: ServerHandle, keys: Keys) -> None:
    with shared_server.http(keys.admin) as http:
        doc = http.get("/schema/openapi.json").json()
    op = doc["paths"]["/metrics"]["get"]
    assert "text/plain" in op["responses"]["200"]["content"]
    assert {"401", "403", "429", "500", "503"} <= set(op["responses"])
