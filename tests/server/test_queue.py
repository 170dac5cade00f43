"""GET /v1/queue: live counts, and tasks ended since local midnight in FETCHML_TIMEZONE."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from tests.harness import Keys, ServerHandle, make_keys

FAR_EAST = "Pacific/Kiritimati"  # UTC+14: its midnight is never UTC's


def local_midnight_utc(tz: str) -> datetime:
    now = datetime.now(ZoneInfo(tz))
    return now.replace(hour=0, minute=0, second=0, microsecond=0).astimezone(UTC)


def db_time(dt: datetime) -> str:
    return dt.astimezone(UTC).replace(tzinfo=None).isoformat(sep=" ", timespec="microseconds")


def stats(srv: ServerHandle, key: str) -> dict[str, int]:
    with srv.http(key) as http:
        r = http.get("/v1/queue")
    assert r.status_code == 200, r.text
    return r.json()  # type: ignore[no-any-return]


def new_task(srv: ServerHandle, key: str, name: str = "q") -> str:
    with srv.http(key) as http:
        r = http.post("/v1/tasks", json={"job_name": name})
    assert r.status_code == 201, r.text
    return str(r.json()["id"])


def set_state(srv: ServerHandle, task_id: str, status: str, ended_at: datetime | None = None) -> None:
    srv.db_exec(
        "UPDATE tasks SET status = ?, ended_at = ? WHERE id = ?",
        (status, db_time(ended_at) if ended_at else None, task_id),
    )


@pytest.fixture
def utc_server(server_factory: Callable[..., ServerHandle]) -> tuple[ServerHandle, Keys]:
    srv = server_factory()
    return srv, make_keys(srv)


@pytest.fixture(scope="module")
def far_east(module_server_factory: Callable[..., ServerHandle]) -> tuple[ServerHandle, Keys]:
    srv = module_server_factory(FETCHML_TIMEZONE=FAR_EAST)
    return srv, make_keys(srv)


def test_empty_queue(utc_server: tuple[ServerHandle, Keys]) -> None:
    srv, keys = utc_server
    assert stats(srv, keys.user) == {"queued": 0, "running": 0, "completed": 0, "failed": 0, "workers": 0}
    assert stats(srv, keys.admin) == stats(srv, keys.user)


def test_counts_follow_the_tasks(utc_server: tuple[ServerHandle, Keys]) -> None:
    srv, keys = utc_server
    ids = [new_task(srv, keys.user, f"q{i}") for i in range(7)]
    assert stats(srv, keys.user)["queued"] == 7

    with srv.http(keys.user) as http:
        assert http.delete(f"/v1/tasks/{ids[0]}").status_code == 204  # cancelled = failed today
    # Every active state counts as running.
    set_state(srv, ids[1], "preparing")
    set_state(srv, ids[2], "running")
    set_state(srv, ids[3], "collecting")
    now = datetime.now(UTC)
    set_state(srv, ids[4], "completed", now)
    assert stats(srv, keys.other) == {"queued": 2, "running": 3, "completed": 1, "failed": 1, "workers": 0}


def test_only_tasks_ended_today_count(utc_server: tuple[ServerHandle, Keys]) -> None:
    srv, keys = utc_server
    midnight = local_midnight_utc("UTC")
    done_today, done_yesterday, failed_today, failed_yesterday = (new_task(srv, keys.user) for _ in range(4))
    set_state(srv, done_today, "completed", midnight + timedelta(seconds=1))
    set_state(srv, done_yesterday, "completed", midnight - timedelta(seconds=1))
    set_state(srv, failed_today, "failed", midnight)  # midnight itself is today
    set_state(srv, failed_yesterday, "failed", midnight - timedelta(days=3))
    s = stats(srv, keys.user)
    assert (s["completed"], s["failed"], s["queued"], s["running"]) == (1, 1, 0, 0)


def test_today_starts_at_local_midnight_of_the_configured_timezone(
    far_east: tuple[ServerHandle, Keys],
) -> None:
    srv, keys = far_east
    midnight = local_midnight_utc(FAR_EAST)
    assert midnight != local_midnight_utc("UTC")
    inside = [new_task(srv, keys.user) for _ in range(2)]
    outside = [new_task(srv, keys.user) for _ in range(2)]
    set_state(srv, inside[0], "completed", midnight + timedelta(seconds=1))
    set_state(srv, inside[1], "failed", midnight + timedelta(minutes=1))
    set_state(srv, outside[0], "completed", midnight - timedelta(seconds=1))
    set_state(srv, outside[1], "failed", midnight - timedelta(hours=1))
    s = stats(srv, keys.user)
    # Whichever side of UTC midnight we are on, a UTC "today" would count 0 or 2 of each.
    assert (s["completed"], s["failed"]) == (1, 1)
