"""GET /health: public, never rate limited, reports status, version and time."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from fetchml import __version__
from tests.harness import ServerHandle


def test_health_needs_no_key(shared_server: ServerHandle) -> None:
    with shared_server.http() as http:
        r = http.get("/health")
    assert r.status_code == 200, r.text
    body = r.json()
    assert set(body) == {"status", "version", "timestamp"}
    assert body["status"] == "healthy"
    assert body["version"] == __version__
    ts = datetime.fromisoformat(body["timestamp"].replace("Z", "+00:00"))
    assert ts.tzinfo is not None
    assert abs(datetime.now(UTC) - ts) < timedelta(minutes=1)
    assert r.headers.get("x-trace-id")


def test_health_ignores_a_bad_key(shared_server: ServerHandle) -> None:
    """A public route does not even look at the key: a wrong one is no reason to fail."""
    with shared_server.http("fml_not-a-real-key") as http:
        assert http.get("/health").status_code == 200


def test_health_is_not_audited(shared_server: ServerHandle, keys) -> None:
    with shared_server.http(keys.admin) as admin:
        before = admin.get("/v1/audit/chain-root").json()["total_events"]
        with shared_server.http("fml_bogus") as anon:
            for _ in range(3):
                assert anon.get("/health").status_code == 200
        assert admin.get("/v1/audit/chain-root").json()["total_events"] == before
