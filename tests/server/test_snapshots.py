"""PUT/HEAD/GET /v1/snapshots/{sha256} against a real server."""

from __future__ import annotations

import hashlib
import io
import random
import tarfile
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from fetchml.client.base import UnexpectedResponseError
from fetchml.core.errors import ForbiddenError
from tests.harness import Keys, ServerHandle, expect_error
from tests.protocol_kit import FakeWorker, submit

GZ = {"Content-Type": "application/gzip"}


def tarball(files: dict[str, bytes], *, symlinks: dict[str, str] | None = None) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
        for name, target in (symlinks or {}).items():
            info = tarfile.TarInfo(name)
            info.type = tarfile.SYMTYPE
            info.linkname = target
            tar.addfile(info)
    return buf.getvalue()


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def stored(handle: ServerHandle) -> list[str]:
    folder = handle.data_dir / "snapshots"
    return sorted(p.name for p in folder.iterdir()) if folder.exists() else []


@pytest.fixture(scope="module")
def server(shared_server: ServerHandle) -> ServerHandle:
    return shared_server


@contextmanager
def holding(server: ServerHandle, keys: Keys, digest: str) -> Iterator[str]:
    """The key of a worker that holds a live attempt running snapshot `digest`: a worker may
    download only such a snapshot."""
    t = submit(server, keys.admin, "snap", snapshot_id=digest, priority=10)
    w = FakeWorker(server, keys.worker)
    try:
        w.register()
        assert w.must_claim().task.id == t.id
        yield w.key
    finally:
        with server.http(keys.admin) as http:
            http.delete(f"/v1/tasks/{t.id}")
        w.close()


def test_put_then_head_then_get_returns_identical_bytes(server: ServerHandle, keys: Keys) -> None:
    body = tarball({"train.py": b"print('train')\n", "cfg/a.yaml": b"lr: 0.1\n"})
    digest = sha(body)
    with server.http(keys.user) as user:
        assert user.head(f"/v1/snapshots/{digest}").status_code == 404
        r = user.put(f"/v1/snapshots/{digest}", content=body, headers=GZ)
        assert r.status_code == 201, r.text
        assert r.json() == {"sha256": digest, "size": len(body), "existed": False}
        head = user.head(f"/v1/snapshots/{digest}")
        assert head.status_code == 200 and head.content == b""
    with holding(server, keys, digest) as wkey, server.http(wkey) as worker:
        got = worker.get(f"/v1/snapshots/{digest}")
        assert got.status_code == 200, got.text
        assert got.content == body
        assert got.headers["content-type"].startswith("application/gzip")
    assert f"{digest}.tar.gz" in stored(server)
    assert (server.data_dir / "snapshots" / f"{digest}.tar.gz").read_bytes() == body


def test_head_of_an_unknown_snapshot_is_404_without_a_body(server: ServerHandle, keys: Keys) -> None:
    with server.http(keys.worker) as http:
        r = http.head(f"/v1/snapshots/{'0' * 64}")
    assert r.status_code == 404 and r.content == b""
    with server.http(keys.admin) as http:
        expect_error(http.get(f"/v1/snapshots/{'0' * 64}"), 404, "NOT_FOUND")


def test_put_twice_is_idempotent(server: ServerHandle, keys: Keys) -> None:
    body = tarball({"idempotent.py": b"x = 1\n"})
    digest = sha(body)
    with server.http(keys.user) as http:
        first = http.put(f"/v1/snapshots/{digest}", content=body, headers=GZ)
        path = server.data_dir / "snapshots" / f"{digest}.tar.gz"
        mtime = path.stat().st_mtime_ns
        second = http.put(f"/v1/snapshots/{digest}", content=body, headers=GZ)
    assert first.status_code == 201, first.text
    assert second.status_code == 200, second.text
    assert second.json() == {"sha256": digest, "size": len(body), "existed": True}
    assert path.stat().st_mtime_ns == mtime, "an existing snapshot is not rewritten"


def test_a_body_that_does_not_match_its_digest_is_refused(server: ServerHandle, keys: Keys) -> None:
    body = tarball({"a.py": b"a\n"})
    claimed = sha(b"something else")
    with server.http(keys.user) as http:
        err = expect_error(
            http.put(f"/v1/snapshots/{claimed}", content=body, headers=GZ), 422, "VALIDATION_ERROR"
        )
        assert "does not match its sha256" in err["error"]
        assert http.head(f"/v1/snapshots/{claimed}").status_code == 404
        # Also when the digest is already stored: the body must still be what it claims.
        good = tarball({"b.py": b"b\n"})
        assert http.put(f"/v1/snapshots/{sha(good)}", content=good, headers=GZ).status_code == 201
        expect_error(
            http.put(f"/v1/snapshots/{sha(good)}", content=body, headers=GZ), 422, "VALIDATION_ERROR"
        )
    assert not any(name.endswith(".part") for name in stored(server))


@pytest.mark.parametrize("bad", ["abc", "A" * 64, "g" * 64, "0" * 63, "0" * 65])
def test_a_malformed_digest_is_refused(server: ServerHandle, keys: Keys, bad: str) -> None:
    with server.http(keys.user) as http:
        err = expect_error(
            http.put(f"/v1/snapshots/{bad}", content=b"x", headers=GZ), 422, "VALIDATION_ERROR"
        )
        assert "sha256" in err["error"]
        assert http.head(f"/v1/snapshots/{bad}").status_code == 422


@pytest.mark.parametrize(
    ("files", "symlinks", "member"),
    [
        ({"../evil.sh": b"x"}, None, "../evil.sh"),
        ({"/etc/cron.d/evil": b"x"}, None, "/etc/cron.d/evil"),
        ({"ok.txt": b"x"}, {"passwd": "/etc/passwd"}, "passwd"),
        ({"ok.txt": b"x"}, {"up": "../../x"}, "up"),
    ],
)
def test_an_unsafe_tarball_is_refused_and_not_stored(
    server: ServerHandle, keys: Keys, files: dict[str, bytes], symlinks: dict[str, str] | None, member: str
) -> None:
    body = tarball(files, symlinks=symlinks)
    digest = sha(body)
    with server.http(keys.user) as http:
        err = expect_error(
            http.put(f"/v1/snapshots/{digest}", content=body, headers=GZ), 422, "VALIDATION_ERROR"
        )
        assert repr(member) in err["error"], err
        assert http.head(f"/v1/snapshots/{digest}").status_code == 404
    assert not [n for n in stored(server) if n.startswith(digest) or n.endswith(".part")]


def test_a_body_that_is_not_a_gzip_tarball_is_refused(server: ServerHandle, keys: Keys) -> None:
    with server.http(keys.user) as http:
        for body in (b"just text", b"\x1f\x8b" + b"\0" * 50):
            err = expect_error(
                http.put(f"/v1/snapshots/{sha(body)}", content=body, headers=GZ), 422, "VALIDATION_ERROR"
            )
            assert "gzip" in err["error"] or "tar archive" in err["error"], err


def test_roles(server: ServerHandle, keys: Keys) -> None:
    body = tarball({"roles.py": b"r\n"})
    digest = sha(body)
    path = f"/v1/snapshots/{digest}"
    with server.http(keys.worker) as worker:
        expect_error(worker.put(path, content=body, headers=GZ), 403, "FORBIDDEN")
    with server.http(keys.admin) as admin:
        assert admin.put(path, content=body, headers=GZ).status_code == 201
        assert admin.get(path).content == body
    with server.http(keys.user) as user:
        expect_error(user.get(path), 403, "FORBIDDEN")
        # Another user's upload, not shared: as if it did not exist (the user uploads their own).
        assert user.head(path).status_code == 404
    with server.http(keys.worker) as worker:
        assert worker.head(path).status_code == 200
        # A worker downloads only what an attempt it holds runs.
        expect_error(worker.get(path), 403, "FORBIDDEN")
    with holding(server, keys, digest) as wkey, server.http(wkey) as worker:
        assert worker.get(path).content == body
    with server.http() as anonymous:
        expect_error(anonymous.get(path), 401, "UNAUTHORIZED")
        expect_error(anonymous.put(path, content=body, headers=GZ), 401, "UNAUTHORIZED")
        assert anonymous.head(path).status_code == 401


def test_the_client_uploads_checks_and_downloads(server: ServerHandle, keys: Keys, tmp_path: Path) -> None:
    body = tarball({"client.py": b"c" * 3_000_000})  # several chunks each way
    digest = sha(body)
    src = tmp_path / "snap.tar.gz"
    src.write_bytes(body)
    with server.client(keys.user) as user:
        assert user.snapshots.exists(digest) is False
        info = user.snapshots.upload(digest, src)
        assert (info.sha256, info.size, info.existed) == (digest, len(body), False)
        assert user.snapshots.upload(digest, src).existed is True
    with (
        holding(server, keys, digest) as wkey,
        server.client(keys.user) as user,
        server.client(wkey) as worker,
    ):
        assert worker.snapshots.exists(digest) is True
        dest = tmp_path / "cache" / "got.tar.gz"
        assert worker.snapshots.download(digest, dest) == dest
        assert dest.read_bytes() == body
        assert sorted(p.name for p in dest.parent.iterdir()) == ["got.tar.gz"]
        with pytest.raises(ForbiddenError):
            user.snapshots.download(digest, tmp_path / "nope.tar.gz")
        assert not (tmp_path / "nope.tar.gz").exists()
        with pytest.raises(ForbiddenError):
            worker.snapshots.upload(digest, src)


@pytest.fixture(scope="module")
def small_server(module_server_factory: Callable[..., ServerHandle]) -> ServerHandle:
    return module_server_factory(FETCHML_MAX_SNAPSHOT_BYTES="20000")


def test_an_oversize_snapshot_is_413(small_server: ServerHandle, tmp_path: Path) -> None:
    key = small_server.make_key("carol", "user")
    fits = tarball({"small.py": b"s\n"})
    big = tarball({"noise.bin": random.Random(7).randbytes(100_000)})  # incompressible
    assert len(big) > 20000
    with small_server.http(key) as http:
        assert http.put(f"/v1/snapshots/{sha(fits)}", content=fits, headers=GZ).status_code == 201
        # With a Content-Length: refused before the body is read.
        expect_error(http.put(f"/v1/snapshots/{sha(big)}", content=big, headers=GZ), 413, "BAD_REQUEST")

    def chunks() -> Iterator[bytes]:
        for i in range(0, len(big), 8192):
            yield big[i : i + 8192]

    # Chunked, no Content-Length: refused once the cap is passed while streaming.
    with small_server.http(key) as http:
        resp = http.put(f"/v1/snapshots/{sha(big)}", content=chunks(), headers=GZ)
        expect_error(resp, 413, "BAD_REQUEST")
        assert http.head(f"/v1/snapshots/{sha(big)}").status_code == 404
    assert stored(small_server) == [f"{sha(fits)}.tar.gz"]


def test_the_snapshot_routes_are_in_the_openapi(server: ServerHandle, keys: Keys) -> None:
    with server.http(keys.user) as http:
        spec = http.get("/schema/openapi.json").json()
    item = spec["paths"]["/v1/snapshots/{sha256}"]
    assert {"put", "get", "head"} <= set(item)


def test_chunked_upload_without_length_is_accepted(server: ServerHandle, keys: Keys) -> None:
    body = tarball({"chunked.py": b"y" * 200_000})
    digest = sha(body)

    def chunks() -> Iterator[bytes]:
        for i in range(0, len(body), 4096):
            yield body[i : i + 4096]

    with server.http(keys.user) as http:
        r = http.put(f"/v1/snapshots/{digest}", content=chunks(), headers=GZ)
    assert r.status_code == 201, r.text
    assert (server.data_dir / "snapshots" / f"{digest}.tar.gz").read_bytes() == body


def test_unreachable_server_is_reported(tmp_path: Path) -> None:
    from fetchml.client import FetchmlClient
    from fetchml.client.base import ServerUnreachableError
    from tests.harness import free_port

    with FetchmlClient(f"http://127.0.0.1:{free_port()}", "fml_x") as client:
        with pytest.raises(ServerUnreachableError):
            client.snapshots.exists("0" * 64)
        with pytest.raises(ServerUnreachableError):
            client.snapshots.download("0" * 64, tmp_path / "x.tar.gz")
    assert list(tmp_path.iterdir()) == []


def test_a_download_that_does_not_match_is_not_kept(server: ServerHandle, keys: Keys, tmp_path: Path) -> None:
    body = tarball({"rot.txt": b"bits\n"})
    digest = sha(body)
    with server.http(keys.user) as http:
        assert http.put(f"/v1/snapshots/{digest}", content=body, headers=GZ).status_code == 201
    # Bit rot on the server's disk: the client notices and keeps nothing.
    (server.data_dir / "snapshots" / f"{digest}.tar.gz").write_bytes(
        body[:10] + bytes([body[10] ^ 0xFF]) + body[11:]
    )
    dest = tmp_path / "cache" / "snap.tar.gz"
    with (
        holding(server, keys, digest) as wkey,
        server.client(wkey) as worker,
        pytest.raises(UnexpectedResponseError, match="sha256"),
    ):
        worker.snapshots.download(digest, dest)
    assert list(dest.parent.iterdir()) == []


def test_the_service_enforces_its_cap_while_streaming(tmp_path: Path) -> None:
    """Behind the route's own body limit, the service counts the bytes too (other callers)."""
    import asyncio

    from fetchml.core.errors import PayloadTooLargeError, ValidationError
    from fetchml.services.snapshots import SnapshotService

    body = tarball({"n.bin": random.Random(3).randbytes(50_000)})

    async def stream(data: bytes) -> AsyncIterator[bytes]:
        for i in range(0, len(data), 1000):
            yield data[i : i + 1000]

    async def scenario() -> None:
        small = SnapshotService(tmp_path, max_bytes=len(body) - 1)
        with pytest.raises(PayloadTooLargeError) as exc:
            await small.put(sha(body), stream(body))
        assert (exc.value.status, exc.value.code) == (413, "BAD_REQUEST")
        assert list((tmp_path / "snapshots").iterdir()) == []
        assert not await small.exists(sha(body))
        fits = SnapshotService(tmp_path, max_bytes=len(body))
        assert (await fits.put(sha(body), stream(body))).existed is False
        assert (await fits.put(sha(body), body)).existed is True
        assert (await fits.path(sha(body))).read_bytes() == body
        with pytest.raises(ValidationError):
            await fits.exists("../../etc/passwd")

    asyncio.run(scenario())
