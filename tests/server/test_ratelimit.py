"""Per-key token buckets: 429 RATE_LIMITED with an integer Retry-After; /health is never limited."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from tests.harness import Keys, ServerHandle, expect_error, make_keys

PER_MINUTE = 5


@pytest.fixture(scope="module")
def limited(module_server_factory: Callable[..., ServerHandle]) -> tuple[ServerHandle, Keys]:
    srv = module_server_factory(FETCHML_RATE_LIMIT_PER_MINUTE=str(PER_MINUTE))
    return srv, make_keys(srv)


def test_capacity_then_429_with_retry_after(limited: tuple[ServerHandle, Keys]) -> None:
    srv, keys = limited
    with srv.http(keys.user) as http:
        codes = [http.get("/v1/queue").status_code for _ in range(PER_MINUTE)]
        assert codes == [200] * PER_MINUTE
        r = http.get("/v1/queue")
    expect_error(r, 429, "RATE_LIMITED")
    retry_after = r.headers.get("retry-after")
    assert retry_after is not None and retry_after.isdigit(), r.headers
    # One token per 60/PER_MINUTE = 12 s: the wait is a whole number of seconds in (0, 12].
    assert 1 <= int(retry_after) <= 60 // PER_MINUTE


def test_every_route_counts_against_the_same_bucket(limited: tuple[ServerHandle, Keys]) -> None:
    srv, keys = limited
    with srv.http(keys.other) as http:
        for path in (
            "/v1/queue",
            "/v1/tasks",
            "/v1/experiments",
            "/v1/tasks/nope",
            "/nope-but-authenticated",
        ):
            http.get(path)
        # "/nope..." is a 404 before any guard runs, so four tokens are gone and one is left.
        assert http.post("/v1/tasks", json={"job_name": "last-token"}).status_code == 201
        r = http.post("/v1/tasks", json={"job_name": "over-the-limit"})
        expect_error(r, 429, "RATE_LIMITED")
    with srv.http(keys.admin) as admin:
        names = [t["job_name"] for t in admin.get("/v1/tasks", params={"user_id": "bob"}).json()["tasks"]]
    assert "over-the-limit" not in names and "last-token" in names


def test_buckets_are_per_key(limited: tuple[ServerHandle, Keys]) -> None:
    srv, keys = limited
    extra = srv.make_key("isolated", "user")
    with srv.http(keys.worker) as worker:
        for _ in range(PER_MINUTE + 2):
            worker.get("/v1/tasks")  # 403s still spend the worker's own tokens
        expect_error(worker.get("/v1/tasks"), 429, "RATE_LIMITED")
    with srv.http(extra) as http:
        assert [http.get("/v1/queue").status_code for _ in range(PER_MINUTE)] == [200] * PER_MINUTE


def test_health_is_never_limited(limited: tuple[ServerHandle, Keys]) -> None:
    srv, keys = limited
    with srv.http(keys.admin) as http:
        for _ in range(PER_MINUTE + 1):
            http.get("/v1/queue")
        expect_error(http.get("/v1/queue"), 429, "RATE_LIMITED")
        assert [http.get("/health").status_code for _ in range(4 * PER_MINUTE)] == [200] * (4 * PER_MINUTE)
    with srv.http() as anon:
        assert [anon.get("/health").status_code for _ in range(4 * PER_MINUTE)] == [200] * (4 * PER_MINUTE)


def test_requests_without_a_key_are_limited_too(limited: tuple[ServerHandle, Keys]) -> None:
    srv, _ = limited
    with srv.http() as anon:
        codes = [anon.get("/v1/tasks").status_code for _ in range(PER_MINUTE + 3)]
    assert codes[:PER_MINUTE] == [401] * PER_MINUTE
    assert set(codes[PER_MINUTE:]) == {429}


def test_bucket_refills_with_time(module_server_factory: Callable[..., ServerHandle]) -> None:
    # One token every 12 s; the server's clock is moved instead of waiting for it.
    srv = module_server_factory(FETCHML_RATE_LIMIT_PER_MINUTE=str(PER_MINUTE))
    key = srv.make_key("refill", "user")
    with srv.http(key) as http:
        assert [http.get("/v1/queue").status_code for _ in range(PER_MINUTE)] == [200] * PER_MINUTE
        r = http.get("/v1/queue")
        expect_error(r, 429, "RATE_LIMITED")
        wait = int(r.headers["retry-after"])
        assert 11 <= wait <= 12  # what trickled in while draining is far below one token
        srv.advance_clock(wait - 2)
        r = http.get("/v1/queue")
        expect_error(r, 429, "RATE_LIMITED")  # the refused request took nothing: 1-2 s remain
        assert r.headers["retry-after"] in ("1", "2"), r.headers
        srv.advance_clock(2)
        assert http.get("/v1/queue").status_code == 200
        r = http.get("/v1/queue")
        expect_error(r, 429, "RATE_LIMITED")
        assert int(r.headers["retry-after"]) in (11, 12)
        # A long quiet spell refills the bucket to its capacity, not beyond.
        srv.advance_clock(3600)
        codes = [http.get("/v1/queue").status_code for _ in range(PER_MINUTE + 1)]
        assert codes == [200] * PER_MINUTE + [429]


def test_a_repeated_bad_key_is_limited_before_it_reaches_the_audit_log(
    module_server_factory: Callable[..., ServerHandle],
) -> None:
    bad = "fml_" + "z" * 40
    srv = module_server_factory(FETCHML_RATE_LIMIT_PER_MINUTE=str(PER_MINUTE))
    with srv.http(bad) as http:
        codes = [http.get("/v1/tasks").status_code for _ in range(PER_MINUTE + 5)]
    assert codes == [401] * PER_MINUTE + [429] * 5
    fresh_admin = srv.make_key("auditor", "admin")  # the module's admin key may be drained
    with srv.http(fresh_admin) as admin:
        attempts = admin.get("/v1/audit/events", params={"event_type": "auth_attempt", "limit": 1000}).json()
    prefix = bad[:12]
    assert sum(e["metadata"].get("key_prefix") == prefix for e in attempts["events"]) == PER_MINUTE


def test_rotating_made_up_keys_are_limited_per_client_address(
    module_server_factory: Callable[..., ServerHandle],
) -> None:
    srv = module_server_factory(FETCHML_RATE_LIMIT_PER_MINUTE=str(PER_MINUTE))
    good = srv.make_key("still-fine", "user")
    codes = []
    for i in range(PER_MINUTE + 5):
        with srv.http(f"fml_rotating{i:04d}" + "q" * 30) as http:
            codes.append(http.get("/v1/tasks").status_code)
    assert codes == [401] * PER_MINUTE + [429] * 5
    fresh_admin = srv.make_key("auditor2", "admin")
    # Only failures are limited per address: a valid key from the same address still works.
    with srv.http(good) as http:
        assert http.get("/v1/queue").status_code == 200
    with srv.http(fresh_admin) as admin:
        attempts = admin.get("/v1/audit/events", params={"event_type": "auth_attempt", "limit": 1000}).json()
    assert (
        sum(str(e["metadata"].get("key_prefix", "")).startswith("fml_rotating") for e in attempts["events"])
        == PER_MINUTE
    )
