"""/v1/tasks: submit, list (filters, pagination, newest first), get, cancel."""

from __future__ import annotations

import hashlib
import io
import tarfile
import uuid
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from tests.harness import Keys, ServerHandle, expect_error, post_task
from tests.protocol_kit import enable_plugins

SHA = "ab" * 32


def parse_ts(value: str) -> datetime:
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


# --- submit -------------------------------------------------------------------------------------


def test_submit_minimal_task(shared_server: ServerHandle, keys: Keys) -> None:
    before = datetime.now(UTC)
    t = post_task(shared_server, keys.user, job_name="minimal")
    assert t["job_name"] == "minimal"
    assert t["status"] == "queued"
    assert t["priority"] == 5
    assert t["user_id"] == "alice"
    assert t["retry_count"] == 0
    assert t["node_count"] == 1
    assert t["max_retries"] == 3  # FETCHML_DEFAULT_MAX_RETRIES
    # Absent, not null: the contract declares no nullable property.
    assert not {"started_at", "ended_at", "error", "worker_id"} & set(t) and None not in t.values()
    assert t["priority_aged"] == pytest.approx(5.0)
    assert isinstance(t["id"], str) and len(t["id"]) >= 16
    created = parse_ts(t["created_at"])
    assert before - timedelta(seconds=5) <= created <= datetime.now(UTC) + timedelta(seconds=5)


def upload_snapshot(srv: ServerHandle, key: str) -> str:
    """A snapshot uploaded with `key`: a task may name only a snapshot its user uploaded."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        data = uuid.uuid4().hex.encode()
        info = tarfile.TarInfo("train.py")
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
    digest = hashlib.sha256(buf.getvalue()).hexdigest()
    with srv.http(key) as http:
        assert http.put(f"/v1/snapshots/{digest}", content=buf.getvalue()).status_code == 201
    return digest


def test_submit_full_task_round_trips(shared_server: ServerHandle, keys: Keys) -> None:
    snapshot = upload_snapshot(shared_server, keys.user)
    body = {
        "job_name": "full_Job-1",
        "priority": 9,
        "args": "--epochs 3",
        "entrypoint": "train.py",
        "snapshot_id": snapshot,
        "datasets": ["mnist", "cifar"],
        "dataset_specs": [
            {
                "name": "mnist",
                "source": "https://example.com/mnist.tgz",
                "sha256": SHA.upper(),
                "mount_path": "data/mnist",
            },
            {"name": "cifar", "source": "/srv/cifar", "sha256": SHA},
        ],
        "cpu": 4,
        "memory_gb": 16,
        "gpu": 2,
        "metadata": {"team": "vision"},
        "image": "pytorch/pytorch:2.4",
        "gpu_type": "A100",
        "max_retries": 1,
        "node_count": 2,
        "plugin_configs": {"mlflow": {"enabled": True, "mode": "remote", "settings": {"experiment": "x"}}},
    }
    enable_plugins(shared_server, "mlflow")
    created = post_task(shared_server, keys.user, **body)
    with shared_server.http(keys.user) as http:
        fetched = http.get(f"/v1/tasks/{created['id']}").json()
    for t in (created, fetched):
        for field in (
            "job_name",
            "priority",
            "args",
            "entrypoint",
            "snapshot_id",
            "datasets",
            "cpu",
            "memory_gb",
            "gpu",
            "metadata",
            "image",
            "gpu_type",
            "max_retries",
            "node_count",
        ):
            assert t[field] == body[field], field
        assert "reservation_id" not in t  # named reservations: tests/server/test_reservations.py
        assert t["dataset_specs"][0]["sha256"] == SHA  # normalised to lower case
        assert t["dataset_specs"][0]["mount_path"] == "data/mnist"
        assert "mount_path" not in t["dataset_specs"][1]
        assert t["plugin_configs"]["mlflow"]["mode"] == "remote"
        assert t["plugin_configs"]["mlflow"]["settings"] == {"experiment": "x"}
        assert t["plugin_status"]["mlflow"] == {"name": "mlflow", "url": "http://127.0.0.1:9/"}
    # A queued task's priority_aged grows while it waits (FETCHML_PRIORITY_AGING_PER_HOUR).
    assert created["priority_aged"] == 9.0 and 9.0 <= fetched["priority_aged"] < 9.1
    # The scheduler explains a queued task when it is read (not in the submit answer).
    assert "pending_reason" not in created and fetched["pending_reason"]
    assert {**fetched, "priority_aged": None, "pending_reason": None} == {
        **created,
        "priority_aged": None,
        "pending_reason": None,
    }


def test_user_id_comes_from_the_key_never_the_body(shared_server: ServerHandle, keys: Keys) -> None:
    t = post_task(shared_server, keys.user, job_name="impostor", user_id="bob")
    assert t["user_id"] == "alice"
    t = post_task(shared_server, keys.admin, job_name="impostor", user_id="alice")
    assert t["user_id"] == "root"


def test_job_name_need_not_be_unique(shared_server: ServerHandle, keys: Keys) -> None:
    a = post_task(shared_server, keys.user, job_name="same-name")
    b = post_task(shared_server, keys.user, job_name="same-name")
    assert a["id"] != b["id"]


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"job_name": "bad/name"}, "job_name"),
        ({"job_name": "a" * 65}, "job_name"),
        ({"job_name": ""}, "job_name"),
        ({"priority": 3}, "job_name"),
        ({"job_name": "p", "priority": 0}, "priority"),
        ({"job_name": "p", "priority": 11}, "priority"),
        # JSON integers only: no coercion of booleans, strings or floats
        ({"job_name": "p", "priority": True}, "priority"),
        ({"job_name": "p", "priority": "5"}, "priority"),
        ({"job_name": "p", "priority": 5.0}, "priority"),
        ({"job_name": "c", "cpu": "4"}, "cpu"),
        ({"job_name": "g", "gpu": False}, "gpu"),
        ({"job_name": "n", "node_count": 2.5}, "node_count"),
        ({"job_name": "c", "cpu": -1}, "cpu"),
        ({"job_name": "m", "memory_gb": -1}, "memory_gb"),
        ({"job_name": "g", "gpu": -2}, "gpu"),
        ({"job_name": "n", "node_count": 0}, "node_count"),
        ({"job_name": "r", "max_retries": -1}, "max_retries"),
        ({"job_name": "d", "dataset_specs": [{"source": "/x", "sha256": SHA}]}, "name"),
        ({"job_name": "d", "dataset_specs": [{"name": "x", "sha256": SHA}]}, "source"),
        ({"job_name": "d", "dataset_specs": [{"name": "x", "source": "/x", "sha256": "12" * 31}]}, "sha256"),
        ({"job_name": "d", "dataset_specs": [{"name": "x", "source": "/x", "sha256": "zz" * 32}]}, "sha256"),
        (
            {
                "job_name": "d",
                "dataset_specs": [{"name": "x", "source": "/x", "sha256": SHA, "mount_path": "/etc"}],
            },
            "mount_path",
        ),
        (
            {
                "job_name": "d",
                "dataset_specs": [{"name": "x", "source": "/x", "sha256": SHA, "mount_path": "../up"}],
            },
            "mount_path",
        ),
        (
            {
                "job_name": "d",
                "dataset_specs": [{"name": "x", "source": "/x", "sha256": SHA, "mount_path": "a/../../up"}],
            },
            "mount_path",
        ),
        ({"job_name": "d", "dataset_specs": "mnist"}, "dataset_specs"),
        ({"job_name": "pc", "plugin_configs": {"mlflow": {"mode": "everywhere"}}}, "plugin_configs"),
    ],
)
def test_invalid_submissions_are_422_naming_the_field(
    shared_server: ServerHandle, keys: Keys, body: dict[str, Any], field: str
) -> None:
    with shared_server.http(keys.user) as http:
        before = http.get("/v1/tasks", params={"limit": 1}).json()["total"]
        err = expect_error(http.post("/v1/tasks", json=body), 422, "VALIDATION_ERROR")
        assert field in err["error"], err
        assert http.get("/v1/tasks", params={"limit": 1}).json()["total"] == before


# --- get ----------------------------------------------------------------------------------------


def test_get_by_id(shared_server: ServerHandle, keys: Keys) -> None:
    t = post_task(shared_server, keys.other, job_name="bobs")
    for key in (keys.other, keys.user, keys.admin):  # users may read any task
        with shared_server.http(key) as http:
            r = http.get(f"/v1/tasks/{t['id']}")
        assert r.status_code == 200 and r.json()["id"] == t["id"] and r.json()["user_id"] == "bob"


def test_get_unknown_is_404(shared_server: ServerHandle, keys: Keys) -> None:
    with shared_server.http(keys.user) as http:
        expect_error(http.get(f"/v1/tasks/{uuid.uuid4().hex}"), 404, "NOT_FOUND")


# --- list ---------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def listing(module_server_factory) -> tuple[ServerHandle, Keys, list[dict[str, Any]]]:
    """A server of its own, so totals are exact: 7 alice tasks, 5 bob tasks, interleaved."""
    from tests.harness import make_keys

    srv = module_server_factory()
    k = make_keys(srv)
    made = []
    for i in range(12):
        key = k.user if i in {0, 1, 2, 4, 5, 7, 9} else k.other
        made.append(post_task(srv, key, job_name=f"list-{i}", priority=1 + i % 10))
    return srv, k, made


def test_list_shape_and_newest_first(listing) -> None:
    srv, k, made = listing
    with srv.http(k.user) as http:
        body = http.get("/v1/tasks").json()
    assert set(body) == {"tasks", "total", "limit", "offset"}
    assert body["total"] == len(made) and body["limit"] == 50 and body["offset"] == 0
    assert [t["id"] for t in body["tasks"]] == [t["id"] for t in reversed(made)]


def test_list_pagination(listing) -> None:
    srv, k, made = listing
    newest_first = [t["id"] for t in reversed(made)]
    seen = []
    with srv.http(k.user) as http:
        for offset in range(0, len(made) + 5, 5):
            page = http.get("/v1/tasks", params={"limit": 5, "offset": offset}).json()
            assert page["limit"] == 5 and page["offset"] == offset and page["total"] == len(made)
            assert len(page["tasks"]) == max(0, min(5, len(made) - offset))
            seen += [t["id"] for t in page["tasks"]]
        assert seen == newest_first
        assert len(http.get("/v1/tasks", params={"limit": 1000}).json()["tasks"]) == len(made)
        expect_error(http.get("/v1/tasks", params={"limit": 1001}), 400, "BAD_REQUEST")


def test_list_filter_by_user(listing) -> None:
    srv, k, made = listing
    with srv.http(k.user) as http:
        for user in ("alice", "bob"):
            body = http.get("/v1/tasks", params={"user_id": user}).json()
            expected = [t["id"] for t in reversed(made) if t["user_id"] == user]
            assert body["total"] == len(expected) > 0
            assert [t["id"] for t in body["tasks"]] == expected
        assert http.get("/v1/tasks", params={"user_id": "nobody"}).json() == {
            "tasks": [],
            "total": 0,
            "limit": 50,
            "offset": 0,
        }


def test_list_filter_by_status(listing) -> None:
    srv, k, made = listing
    victim = made[4]
    with srv.http(k.admin) as http:
        assert http.delete(f"/v1/tasks/{victim['id']}").status_code == 204
        failed = http.get("/v1/tasks", params={"status": "failed"}).json()
        queued = http.get("/v1/tasks", params={"status": "queued"}).json()
        assert [t["id"] for t in failed["tasks"]] == [victim["id"]] and failed["total"] == 1
        assert queued["total"] == len(made) - 1
        assert victim["id"] not in {t["id"] for t in queued["tasks"]}
        assert http.get("/v1/tasks", params={"status": "running"}).json()["total"] == 0
        both = http.get("/v1/tasks", params={"status": "failed", "user_id": victim["user_id"]}).json()
        assert [t["id"] for t in both["tasks"]] == [victim["id"]]
        other = "bob" if victim["user_id"] == "alice" else "alice"
        assert http.get("/v1/tasks", params={"status": "failed", "user_id": other}).json()["total"] == 0


def test_newest_first_holds_for_identical_timestamps(listing) -> None:
    """Order is by submission, not by a timestamp that can tie (or be skewed)."""
    srv, k, made = listing
    same = "2020-01-01 00:00:00.000000"
    srv.db_exec("UPDATE tasks SET created_at = ?", (same,))
    with srv.http(k.user) as http:
        ids = [t["id"] for t in http.get("/v1/tasks").json()["tasks"]]
    assert ids == [t["id"] for t in reversed(made)]


# --- cancel -------------------------------------------------------------------------------------


def test_cancel_own_queued_task(shared_server: ServerHandle, keys: Keys) -> None:
    t = post_task(shared_server, keys.user, job_name="to-cancel")
    with shared_server.http(keys.user) as http:
        r = http.delete(f"/v1/tasks/{t['id']}")
        assert r.status_code == 204 and r.content == b""
        after = http.get(f"/v1/tasks/{t['id']}").json()
    assert after["status"] == "failed"
    assert after["error"] == "cancelled"
    assert after["ended_at"] is not None
    assert parse_ts(after["ended_at"]) >= parse_ts(after["created_at"])


def test_cancel_unknown_is_404(shared_server: ServerHandle, keys: Keys) -> None:
    with shared_server.http(keys.user) as http:
        expect_error(http.delete(f"/v1/tasks/{uuid.uuid4().hex}"), 404, "NOT_FOUND")


def test_cancel_someone_elses_task_is_403_and_changes_nothing(
    shared_server: ServerHandle, keys: Keys
) -> None:
    t = post_task(shared_server, keys.other, job_name="bobs-task")
    with shared_server.http(keys.user) as http:
        expect_error(http.delete(f"/v1/tasks/{t['id']}"), 403, "FORBIDDEN")
        assert http.get(f"/v1/tasks/{t['id']}").json()["status"] == "queued"


def test_admin_may_cancel_anyones_task(shared_server: ServerHandle, keys: Keys) -> None:
    t = post_task(shared_server, keys.other, job_name="bobs-task")
    with shared_server.http(keys.admin) as http:
        assert http.delete(f"/v1/tasks/{t['id']}").status_code == 204
        after = http.get(f"/v1/tasks/{t['id']}").json()
    assert after["status"] == "failed" and after["error"] == "cancelled" and after["user_id"] == "bob"


def test_cancel_twice_is_409(shared_server: ServerHandle, keys: Keys) -> None:
    t = post_task(shared_server, keys.user, job_name="twice")
    with shared_server.http(keys.user) as http:
        assert http.delete(f"/v1/tasks/{t['id']}").status_code == 204
        ended = http.get(f"/v1/tasks/{t['id']}").json()["ended_at"]
        expect_error(http.delete(f"/v1/tasks/{t['id']}"), 409, "CONFLICT")
        assert http.get(f"/v1/tasks/{t['id']}").json()["ended_at"] == ended


@pytest.mark.parametrize("status", ["completed", "failed"])
def test_cancel_a_finished_task_is_409(shared_server: ServerHandle, keys: Keys, status: str) -> None:
    t = post_task(shared_server, keys.user, job_name=f"in-{status}")
    shared_server.db_exec(
        "UPDATE tasks SET status = ?, ended_at = '2026-01-01 00:00:00.000000' WHERE id = ?",
        (status, t["id"]),
    )
    with shared_server.http(keys.user) as http:
        expect_error(http.delete(f"/v1/tasks/{t['id']}"), 409, "CONFLICT")
        assert http.get(f"/v1/tasks/{t['id']}").json()["status"] == status


def test_concurrent_cancels_of_one_task_succeed_once(shared_server: ServerHandle, keys: Keys) -> None:
    t = post_task(shared_server, keys.user, job_name="cancel-race")

    def attempt(_: int) -> int:
        with shared_server.http(keys.user) as http:
            return http.delete(f"/v1/tasks/{t['id']}").status_code

    with ThreadPoolExecutor(max_workers=8) as pool:
        codes = sorted(pool.map(attempt, range(12)))
    assert codes == [204] + [409] * 11, codes


def test_concurrent_submissions_get_distinct_ids(shared_server: ServerHandle, keys: Keys) -> None:
    def attempt(i: int) -> str:
        return str(post_task(shared_server, keys.other if i % 2 else keys.user, job_name=f"par-{i}")["id"])

    with ThreadPoolExecutor(max_workers=8) as pool:
        ids = list(pool.map(attempt, range(40)))
    assert len(set(ids)) == 40
    with shared_server.http(keys.admin) as http:
        for tid in ids[::7]:
            assert http.get(f"/v1/tasks/{tid}").status_code == 200
