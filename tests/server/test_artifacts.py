"""Artifacts over real HTTP: uploaded by the worker while collecting, listed and downloaded by users."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

from fetchml.core.errors import ConflictError, ForbiddenError, NotFoundError
from fetchml.core.protocol import Artifact, Assignment
from tests.harness import ServerHandle, expect_error
from tests.protocol_kit import BoxKeys as K
from tests.protocol_kit import FakeWorker, box_keys, box_one, submit

CAP = 16384  # FETCHML_MAX_ARTIFACT_BYTES of this module's server


@pytest.fixture(scope="module")
def srv(module_server_factory: Callable[..., ServerHandle]) -> ServerHandle:
    return module_server_factory(FETCHML_RATE_LIMIT_PER_MINUTE="100000", FETCHML_MAX_ARTIFACT_BYTES=str(CAP))


@pytest.fixture(scope="module")
def ks(srv: ServerHandle) -> K:
    return box_keys(srv)


@pytest.fixture
def w(srv: ServerHandle, ks: K) -> Iterator[FakeWorker]:
    yield from box_one(srv, ks)


@pytest.fixture
def collecting(srv: ServerHandle, ks: K, w: FakeWorker) -> Assignment:
    t = submit(srv, ks.user, "with-outputs")
    a = w.must_claim()
    assert a.task.id == t.id
    w.run_to(a, "running", "collecting")
    return a


def put(
    srv: ServerHandle, key: str, task_id: str, raw_path: str, body: bytes, attempt: int | None = 1
) -> httpx.Response:
    """PUT with the path sent exactly as given (httpx would otherwise resolve `..` itself)."""
    url = f"{srv.url}/v1/tasks/{task_id}/artifacts/{raw_path}"
    if attempt is not None:
        url += f"?attempt={attempt}"
    with srv.http(key) as http:
        return http.send(http.build_request("PUT", url, content=body))


def write(tmp: Path, name: str, data: bytes) -> Path:
    p = tmp / name
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_bytes(data)
    return p


def file_access_events(srv: ServerHandle, admin: str, task_id: str) -> list[dict[str, object]]:
    with srv.http(admin) as http:
        events = http.get("/v1/audit/events", params={"event_type": "file_access", "limit": 1000}).json()[
            "events"
        ]
    return [e for e in events if str(e["resource"]).startswith(f"task:{task_id}/")]


def test_upload_list_download_round_trip(
    srv: ServerHandle, ks: K, w: FakeWorker, collecting: Assignment, tmp_path: Path
) -> None:
    tid = collecting.task.id
    model = os.urandom(CAP)  # exactly at the cap: allowed
    metrics = b'{"loss": 0.01}\n'
    with srv.client(ks.w1) as c:
        up = c.artifacts.upload(tid, 1, "ckpt/model.bin", write(tmp_path, "m.bin", model))
        c.artifacts.upload(tid, 1, "metrics.json", write(tmp_path, "metrics.json", metrics))
        c.artifacts.upload(tid, 1, "empty.txt", write(tmp_path, "empty.txt", b""))
    assert (up.path, up.size, up.sha256, up.attempt) == (
        "ckpt/model.bin",
        CAP,
        hashlib.sha256(model).hexdigest(),
        1,
    )
    w.report(collecting, "completed", exit_code=0)

    with srv.client(ks.user) as c:
        listed = c.artifacts.list(tid)
        assert [(a.path, a.size, a.attempt) for a in listed] == [
            ("ckpt/model.bin", CAP, 1),
            ("empty.txt", 0, 1),
            ("metrics.json", len(metrics), 1),
        ]
        assert listed[2].sha256 == hashlib.sha256(metrics).hexdigest()
        before = len(file_access_events(srv, ks.admin, tid))
        dest = c.artifacts.download(tid, "ckpt/model.bin", tmp_path / "out" / "model.bin")
        assert dest.read_bytes() == model
        assert c.artifacts.download(tid, "empty.txt", tmp_path / "out" / "e").read_bytes() == b""
    assert not [p for p in (tmp_path / "out").iterdir() if p.name.startswith(".download-")]

    with srv.http(ks.user) as http:
        r = http.get(f"/v1/tasks/{tid}/artifacts/metrics.json")
    assert r.status_code == 200 and r.content == metrics
    assert r.headers["content-type"].startswith("application/octet-stream")

    events = file_access_events(srv, ks.admin, tid)
    assert len(events) == before + 3
    newest = events[0]
    assert (newest["resource"], newest["action"], newest["user_id"]) == (
        f"task:{tid}/artifact:metrics.json",
        "download",
        "alice",
    )
    assert newest["metadata"] == {
        "attempt": 1,
        "size": len(metrics),
        "sha256": hashlib.sha256(metrics).hexdigest(),
    }


def test_an_upload_replaces_the_same_path_of_the_same_attempt(
    srv: ServerHandle, ks: K, collecting: Assignment
) -> None:
    tid = collecting.task.id
    assert put(srv, ks.w1, tid, "a.txt", b"first").status_code == 201
    r = put(srv, ks.w1, tid, "a.txt", b"second")
    assert r.status_code == 201 and Artifact.model_validate(r.json()).size == 6
    with srv.client(ks.user) as c:
        assert [(a.path, a.size) for a in c.artifacts.list(tid)] == [("a.txt", 6)]
    with srv.http(ks.user) as http:
        assert http.get(f"/v1/tasks/{tid}/artifacts/a.txt").content == b"second"


def test_artifacts_of_several_attempts(
    srv: ServerHandle, ks: K, w: FakeWorker, collecting: Assignment
) -> None:
    tid = collecting.task.id
    assert put(srv, ks.w1, tid, "out.txt", b"attempt one").status_code == 201
    assert w.register().lost_tasks == [tid]
    a2 = w.must_claim()
    w.run_to(a2, "running", "collecting")
    assert put(srv, ks.w1, tid, "out.txt", b"attempt two", attempt=2).status_code == 201
    assert put(srv, ks.w1, tid, "out.txt", b"late", attempt=1).status_code == 409
    with srv.client(ks.user) as c:
        assert [(a.path, a.attempt) for a in c.artifacts.list(tid)] == [("out.txt", 2), ("out.txt", 1)]
    with srv.http(ks.user) as http:
        assert http.get(f"/v1/tasks/{tid}/artifacts/out.txt").content == b"attempt two"
        assert http.get(f"/v1/tasks/{tid}/artifacts/out.txt", params={"attempt": 1}).content == b"attempt one"
        expect_error(http.get(f"/v1/tasks/{tid}/artifacts/out.txt", params={"attempt": 3}), 404, "NOT_FOUND")


@pytest.mark.parametrize(
    "raw_path",
    ["%2E%2E/x", "..%2Fx", "a/%2E%2E/%2E%2E/x", "%2E%2E", "%5Cetc%5Cpasswd", "C:/x", "c:%5Cx", "%2E"],
    ids=[
        "dotdot",
        "dotdot-encoded-slash",
        "climb",
        "bare-dotdot",
        "backslash-absolute",
        "drive",
        "drive-backslash",
        "dot",
    ],
)
def test_paths_may_not_escape(srv: ServerHandle, ks: K, collecting: Assignment, raw_path: str) -> None:
    err = expect_error(put(srv, ks.w1, collecting.task.id, raw_path, b"x"), 422, "VALIDATION_ERROR")
    assert "artifact path" in err["error"]
    with srv.http(ks.user) as http:
        r = http.send(
            http.build_request("GET", f"{srv.url}/v1/tasks/{collecting.task.id}/artifacts/{raw_path}")
        )
    expect_error(r, 422, "VALIDATION_ERROR")
    with srv.client(ks.user) as c:
        assert c.artifacts.list(collecting.task.id) == []


def test_a_file_and_a_folder_cannot_share_a_name(srv: ServerHandle, ks: K, collecting: Assignment) -> None:
    tid = collecting.task.id
    assert put(srv, ks.w1, tid, "a", b"file").status_code == 201
    expect_error(put(srv, ks.w1, tid, "a/b", b"x"), 409, "CONFLICT")
    assert put(srv, ks.w1, tid, "c/d", b"x").status_code == 201
    expect_error(put(srv, ks.w1, tid, "c", b"x"), 409, "CONFLICT")
    with srv.client(ks.user) as c:
        assert sorted(a.path for a in c.artifacts.list(tid)) == ["a", "c/d"]
    assert not list((srv.data_dir / "artifacts").glob(".upload-*"))


def test_a_leading_slash_cannot_reach_outside_the_task(
    srv: ServerHandle, ks: K, collecting: Assignment
) -> None:
    """The router folds `//` (also `/%2F`) into `/`, so `artifacts//x/y` can only name `x/y` under
    the task: an absolute path cannot even be expressed in the URL. (`\\x` and `C:/x` can, and are
    422 above.)"""
    for raw in ("/tmp-abs/x.txt", "%2Ftmp-abs/y.txt"):
        r = put(srv, ks.w1, collecting.task.id, raw, b"x")
        assert r.status_code == 201, r.text
        assert r.json()["path"].startswith("tmp-abs/")
    assert not Path("/tmp-abs").exists()


def test_stale_attempts_and_ended_tasks_are_refused(
    srv: ServerHandle, ks: K, w: FakeWorker, collecting: Assignment
) -> None:
    tid = collecting.task.id
    expect_error(put(srv, ks.w1, tid, "x.txt", b"x", attempt=2), 409, "CONFLICT")
    assert "attempt" in expect_error(put(srv, ks.w1, tid, "x.txt", b"x", attempt=None), 400, "BAD_REQUEST")["error"]
    expect_error(put(srv, ks.w1, tid, "x.txt", b"x", attempt=0), 400, "BAD_REQUEST")
    w.report(collecting, "completed", exit_code=0)
    expect_error(put(srv, ks.w1, tid, "x.txt", b"x", attempt=1), 409, "CONFLICT")
    queued = submit(srv, ks.user, "queued").id
    expect_error(put(srv, ks.w1, queued, "x.txt", b"x", attempt=1), 409, "CONFLICT")
    with srv.client(ks.user) as c:
        assert c.artifacts.list(tid) == []


def test_only_the_holding_worker_may_upload(
    srv: ServerHandle, ks: K, collecting: Assignment, tmp_path: Path
) -> None:
    tid = collecting.task.id
    expect_error(put(srv, ks.w2, tid, "x.txt", b"x"), 403, "FORBIDDEN")
    expect_error(put(srv, ks.user, tid, "x.txt", b"x"), 403, "FORBIDDEN")
    with srv.client(ks.w2) as c, pytest.raises(ForbiddenError):
        c.artifacts.upload(tid, 1, "x.txt", write(tmp_path, "x.txt", b"x"))
    assert put(srv, ks.admin, tid, "by-admin.txt", b"x").status_code == 201


def test_size_cap_is_413_and_leaves_nothing_behind(
    srv: ServerHandle, ks: K, collecting: Assignment, tmp_path: Path
) -> None:
    tid = collecting.task.id
    err = expect_error(put(srv, ks.w1, tid, "big.bin", os.urandom(CAP + 1)), 413, "BAD_REQUEST")
    assert str(CAP) in err["error"]

    def chunks() -> Iterator[bytes]:  # no Content-Length: the cap holds while streaming
        for _ in range(8):
            yield b"z" * 4096

    with srv.http(ks.w1) as http:
        r = http.put(f"/v1/tasks/{tid}/artifacts/streamed.bin", params={"attempt": 1}, content=chunks())
    expect_error(r, 413, "BAD_REQUEST")
    with srv.client(ks.user) as c:
        assert c.artifacts.list(tid) == []
    root = srv.data_dir / "artifacts"
    assert not list(root.glob(".upload-*"))  # no temporary file left over
    assert not [p for p in (root / tid).rglob("*") if p.is_file()]
    # A cap on one file does not block the next one.
    assert put(srv, ks.w1, tid, "small.bin", b"s" * 100).status_code == 201


def test_not_found(srv: ServerHandle, ks: K, collecting: Assignment, tmp_path: Path) -> None:
    with srv.http(ks.user) as http:
        expect_error(http.get("/v1/tasks/no-such-task/artifacts"), 404, "NOT_FOUND")
        expect_error(http.get(f"/v1/tasks/{collecting.task.id}/artifacts/none.txt"), 404, "NOT_FOUND")
        expect_error(http.get("/v1/tasks/no-such-task/artifacts/none.txt"), 404, "NOT_FOUND")
    expect_error(put(srv, ks.w1, "no-such-task", "x.txt", b"x"), 404, "NOT_FOUND")
    with srv.client(ks.user) as c, pytest.raises(NotFoundError):
        c.artifacts.download(collecting.task.id, "none.txt", tmp_path / "none.txt")
    assert not list(tmp_path.iterdir())  # no partial file left by the failed download
    with srv.client(ks.w1) as c, pytest.raises(ConflictError):
        c.artifacts.upload(collecting.task.id, 9, "x.txt", write(tmp_path / "src", "x.txt", b"x"))
