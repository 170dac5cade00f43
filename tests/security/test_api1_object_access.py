"""OWASP API1 (broken object level authorization): other users' tasks and snapshots.

Audit finding: every user read every other user's logs, output, args, artifacts and dataset
sources, and could run another user's code by naming their snapshot_id in a task. Now every
user still sees the queue (who runs what, where, with which resources), but a task's contents,
its logs and its artifacts are its owner's and the admins' (403 for others), unless the
operator sets FETCHML_SHARED_TASK_CONTENTS=true; a task may name only a snapshot its user
uploaded or one an admin shared.
"""

from __future__ import annotations

import hashlib
import io
import tarfile
import uuid
from collections.abc import Callable

import pytest

from tests.harness import Keys, ServerHandle, expect_error, make_keys
from tests.protocol_kit import FakeWorker
from tests.security.conftest import plugin_server

SHA = "ab" * 32


def snapshot_bytes() -> tuple[str, bytes]:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        data = f"print('{uuid.uuid4().hex}')\n".encode()
        info = tarfile.TarInfo("train.py")
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
    body = buf.getvalue()
    return hashlib.sha256(body).hexdigest(), body


def upload(srv: ServerHandle, key: str, digest: str, body: bytes) -> int:
    with srv.http(key) as http:
        return int(http.put(f"/v1/snapshots/{digest}", content=body).status_code)


def create(srv: ServerHandle, key: str, **body: object) -> dict:
    body.setdefault("job_name", "job")
    with srv.http(key) as http:
        r = http.post("/v1/tasks", json=body)
    assert r.status_code == 201, r.text
    return r.json()  # type: ignore[no-any-return]


SECRET_BODY = {
    "job_name": "alice-secret",
    "args": "--token ALICE-SECRET-ARG",
    "entrypoint": "train.py --key ALICE-SECRET-EP",
    "metadata": {"note": "ALICE-SECRET-META"},
    "datasets": ["alice-private"],
    "dataset_specs": [{"name": "d", "source": "/srv/alice/ALICE-SECRET-PATH", "sha256": SHA}],
    "plugin_configs": {"mlflow": {"enabled": True, "settings": {"experiment": "ALICE-SECRET-PLUGIN"}}},
    "cpu": 2,
    "memory_gb": 4,
    "priority": 10,
}


def run_alice_task(srv: ServerHandle, ks: Keys, worker: FakeWorker) -> str:
    """Alice's task, run to completion with a log line, an artifact, output and an error text."""
    t = create(srv, ks.user, **SECRET_BODY)
    a = worker.must_claim()
    assert a.task.id == t["id"]
    worker.report(a, "running")
    worker.log(a, 0, ["ALICE-SECRET-LOG"])
    worker.report(a, "collecting")
    with srv.http(worker.key) as http:
        r = http.put(f"/v1/tasks/{t['id']}/artifacts/model.pt", params={"attempt": 1}, content=b"weights")
        assert r.status_code == 201, r.text
    worker.report(a, "failed", exit_code=1, output="ALICE-SECRET-OUT", error="ALICE-SECRET-ERR")
    return str(t["id"])


def test_other_users_see_the_queue_but_not_a_tasks_contents(
    srv: ServerHandle, ks: Keys, worker: FakeWorker
) -> None:
    tid = run_alice_task(srv, ks, worker)
    with srv.http(ks.other) as bob:
        listed = [t for t in bob.get("/v1/tasks", params={"limit": 1000}).json()["tasks"] if t["id"] == tid]
        one = bob.get(f"/v1/tasks/{tid}").json()
        # Logs and artifacts: 403, for every way of reading them.
        for path, params in (
            (f"/v1/tasks/{tid}/logs", {}),
            (f"/v1/tasks/{tid}/logs", {"tail": "5"}),
            (f"/v1/tasks/{tid}/logs", {"follow": "true"}),
            (f"/v1/tasks/{tid}/artifacts", {}),
            (f"/v1/tasks/{tid}/artifacts/model.pt", {}),
            (f"/v1/tasks/{tid}/artifacts/no-such-file", {}),
        ):
            err = expect_error(bob.get(path, params=params), 403, "FORBIDDEN")
            assert "ALICE-SECRET" not in str(err)
        # An unknown task stays 404.
        expect_error(bob.get("/v1/tasks/no-such-task/logs"), 404, "NOT_FOUND")
    assert len(listed) == 1
    for seen in (listed[0], one):
        assert (seen["id"], seen["job_name"], seen["user_id"], seen["status"]) == (
            tid,
            "alice-secret",
            "alice",
            "failed",
        )
        assert (seen["cpu"], seen["memory_gb"], seen["priority"], seen["attempt"]) == (2, 4, 10, 1)
        assert seen["worker_id"] == worker.name and seen["exit_code"] == 1
        assert "ALICE-SECRET" not in str(seen)
    # No download was audited for bob.
    with srv.http(ks.admin) as http:
        events = http.get("/v1/audit/events", params={"event_type": "file_access", "limit": 1000}).json()[
            "events"
        ]
    assert not [e for e in events if e["user_id"] == "bob"]


def test_the_owner_and_admins_see_everything(srv: ServerHandle, ks: Keys, worker: FakeWorker) -> None:
    tid = run_alice_task(srv, ks, worker)
    for key in (ks.user, ks.admin):
        with srv.http(key) as http:
            t = http.get(f"/v1/tasks/{tid}").json()
            assert t["args"] == SECRET_BODY["args"] and t["entrypoint"] == SECRET_BODY["entrypoint"]
            assert (t["output"], t["error"]) == ("ALICE-SECRET-OUT", "ALICE-SECRET-ERR")
            assert t["metadata"] == SECRET_BODY["metadata"]
            assert http.get(f"/v1/tasks/{tid}/logs").json()["lines"] == ["ALICE-SECRET-LOG"]
            assert [a["path"] for a in http.get(f"/v1/tasks/{tid}/artifacts").json()] == ["model.pt"]
            assert http.get(f"/v1/tasks/{tid}/artifacts/model.pt").content == b"weights"


def test_a_task_may_not_run_another_users_snapshot(srv: ServerHandle, ks: Keys) -> None:
    digest, body = snapshot_bytes()
    assert upload(srv, ks.user, digest, body) == 201
    with srv.http(ks.other) as bob:
        err = expect_error(
            bob.post("/v1/tasks", json={"job_name": "steal", "snapshot_id": digest}), 403, "FORBIDDEN"
        )
        assert digest in err["error"]
        # To bob, alice's upload does not exist (`fetchml run` then uploads its own copy).
        assert bob.head(f"/v1/snapshots/{digest}").status_code == 404
        expect_error(bob.get(f"/v1/snapshots/{digest}"), 403, "FORBIDDEN")
        # A digest nobody uploaded: the same answer, so the refusal says nothing about uploads.
        expect_error(
            bob.post("/v1/tasks", json={"job_name": "x", "snapshot_id": "cd" * 32}), 403, "FORBIDDEN"
        )
    assert srv.db_exec("SELECT count(*) FROM tasks WHERE job_name = 'steal'") == [(0,)]
    # Alice uses her own; admins may name any snapshot.
    assert create(srv, ks.user, snapshot_id=digest)["snapshot_id"] == digest
    assert create(srv, ks.admin, snapshot_id=digest)["snapshot_id"] == digest


def test_uploading_the_same_bytes_makes_a_second_owner(srv: ServerHandle, ks: Keys) -> None:
    digest, body = snapshot_bytes()
    assert upload(srv, ks.user, digest, body) == 201
    assert upload(srv, ks.other, digest, body) == 200  # already stored: bob proved he has the bytes
    with srv.http(ks.other) as bob:
        assert bob.head(f"/v1/snapshots/{digest}").status_code == 200
    assert create(srv, ks.other, snapshot_id=digest)["user_id"] == "bob"


def test_an_admin_may_share_a_snapshot_with_everyone(srv: ServerHandle, ks: Keys) -> None:
    digest, body = snapshot_bytes()
    assert upload(srv, ks.user, digest, body) == 201
    with srv.http(ks.other) as bob:
        expect_error(bob.post(f"/v1/snapshots/{digest}/share"), 403, "FORBIDDEN")  # admins only
        expect_error(bob.post("/v1/tasks", json={"job_name": "b", "snapshot_id": digest}), 403, "FORBIDDEN")
    with srv.http(ks.user) as alice:
        expect_error(alice.post(f"/v1/snapshots/{digest}/share"), 403, "FORBIDDEN")
    with srv.http(ks.admin) as admin:
        assert admin.post(f"/v1/snapshots/{digest}/share").status_code == 204
        assert admin.post(f"/v1/snapshots/{digest}/share").status_code == 204  # again: no change
        expect_error(admin.post(f"/v1/snapshots/{'ef' * 32}/share"), 404, "NOT_FOUND")
        events = admin.get("/v1/audit/events", params={"limit": 1000}).json()["events"]
    shares = [e for e in events if e["resource"] == f"snapshot:{digest}" and e["action"] == "share"]
    assert len(shares) == 1 and shares[0]["user_id"] == "root"
    with srv.http(ks.other) as bob:
        assert bob.head(f"/v1/snapshots/{digest}").status_code == 200
    assert create(srv, ks.other, snapshot_id=digest)["snapshot_id"] == digest


def test_a_worker_downloads_only_snapshots_of_attempts_it_holds(
    srv: ServerHandle, ks: Keys, worker: FakeWorker
) -> None:
    mine, body = snapshot_bytes()
    other, other_body = snapshot_bytes()
    assert upload(srv, ks.user, mine, body) == 201
    assert upload(srv, ks.user, other, other_body) == 201
    t = create(srv, ks.user, snapshot_id=mine, priority=10)
    assert worker.must_claim().task.id == t["id"]
    with srv.http(worker.key) as http:
        assert http.get(f"/v1/snapshots/{mine}").content == body
        expect_error(http.get(f"/v1/snapshots/{other}"), 403, "FORBIDDEN")


@pytest.fixture(scope="module")
def open_srv(module_server_factory: Callable[..., ServerHandle]) -> ServerHandle:
    return plugin_server(module_server_factory, FETCHML_SHARED_TASK_CONTENTS="true")


def test_shared_task_contents_opens_them_to_every_user(open_srv: ServerHandle) -> None:
    ks = make_keys(open_srv)
    w = FakeWorker(open_srv, ks.worker)
    try:
        w.register()
        tid = run_alice_task(open_srv, ks, w)
    finally:
        w.close()
    with open_srv.http(ks.other) as bob:
        t = bob.get(f"/v1/tasks/{tid}").json()
        assert (t["args"], t["output"], t["error"]) == (
            SECRET_BODY["args"],
            "ALICE-SECRET-OUT",
            "ALICE-SECRET-ERR",
        )
        assert bob.get(f"/v1/tasks/{tid}/logs").json()["lines"] == ["ALICE-SECRET-LOG"]
        assert bob.get(f"/v1/tasks/{tid}/artifacts/model.pt").content == b"weights"
    # Workers are not users: the setting gives them nothing.
    with open_srv.http(ks.worker) as http:
        expect_error(http.get(f"/v1/tasks/{tid}/logs"), 403, "FORBIDDEN")
