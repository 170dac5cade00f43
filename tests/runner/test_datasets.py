"""DatasetCache: local paths, file:// and http(s) sources, verified by SHA-256, cached by it."""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Iterator
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import pytest

from fetchml.core.models import DatasetSpec
from fetchml.runner.datasets import DatasetCache, DatasetError

DATA = b"label,pixel\n" + b"1,0.5\n" * 400_000  # ~2.4 MB: several chunks


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


class _Handler(SimpleHTTPRequestHandler):
    hits: list[str]

    def do_GET(self) -> None:
        self.hits.append(self.path)
        super().do_GET()

    def log_message(self, *args: object) -> None:  # keep the test output clean
        pass


@pytest.fixture
def http_root(tmp_path: Path) -> Iterator[tuple[str, Path, list[str]]]:
    """A stdlib file server on 127.0.0.1 serving a folder; yields (base URL, folder, request paths)."""
    root = tmp_path / "www"
    root.mkdir()
    hits: list[str] = []
    handler = type("Handler", (_Handler,), {"hits": hits})
    server = ThreadingHTTPServer(("127.0.0.1", 0), partial(handler, directory=str(root)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", root, hits
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


def cache_files(cache: Path) -> list[str]:
    return sorted(p.name for p in cache.iterdir()) if cache.exists() else []


def test_a_local_path_is_copied_into_the_cache(tmp_path: Path) -> None:
    src = tmp_path / "train.csv"
    src.write_bytes(DATA)
    cache = DatasetCache(tmp_path / "cache")
    got = cache.fetch(DatasetSpec(name="mnist", source=str(src), sha256=sha(DATA)))
    assert got == tmp_path / "cache" / sha(DATA)
    assert got.read_bytes() == DATA
    assert not got.samefile(src)
    assert [n for n in cache_files(tmp_path / "cache") if not n.startswith(".")] == [sha(DATA)]
    assert not [n for n in cache_files(tmp_path / "cache") if n.endswith(".part")]


def test_a_file_url_is_read(tmp_path: Path) -> None:
    src = tmp_path / "with space" / "d.bin"
    src.parent.mkdir()
    src.write_bytes(DATA)
    cache = DatasetCache(tmp_path / "cache")
    got = cache.fetch(DatasetSpec(name="d", source=src.as_uri(), sha256=sha(DATA)))
    assert got.read_bytes() == DATA


def test_an_http_source_is_streamed(tmp_path: Path, http_root: tuple[str, Path, list[str]]) -> None:
    base, root, hits = http_root
    (root / "cifar.tar").write_bytes(DATA)
    spec = DatasetSpec(name="cifar", source=f"{base}/cifar.tar", sha256=sha(DATA))
    with httpx.Client() as http:
        got = DatasetCache(tmp_path / "cache", http).fetch(spec)
    assert got.read_bytes() == DATA
    assert hits == ["/cifar.tar"]
    # Without a client of its own, the cache makes one.
    (root / "other.bin").write_bytes(b"other")
    other = DatasetSpec(name="other", source=f"{base}/other.bin", sha256=sha(b"other"))
    assert DatasetCache(tmp_path / "cache").fetch(other).read_bytes() == b"other"


def test_a_cache_hit_does_not_fetch_again(tmp_path: Path, http_root: tuple[str, Path, list[str]]) -> None:
    base, root, hits = http_root
    (root / "d.bin").write_bytes(DATA)
    spec = DatasetSpec(name="d", source=f"{base}/d.bin", sha256=sha(DATA))
    cache = DatasetCache(tmp_path / "cache")
    first = cache.fetch(spec)
    (root / "d.bin").unlink()  # gone from the source: only the cache can answer now
    assert DatasetCache(tmp_path / "cache").fetch(spec) == first
    assert hits == ["/d.bin"]
    # The same content under another name and source is the same cache entry.
    again = DatasetSpec(name="alias", source=str(tmp_path / "missing.bin"), sha256=sha(DATA))
    assert cache.fetch(again) == first


def test_a_mismatch_fails_and_leaves_nothing_cached(
    tmp_path: Path, http_root: tuple[str, Path, list[str]]
) -> None:
    base, root, _ = http_root
    (root / "cifar.tar").write_bytes(DATA)
    wrong = sha(b"what the user expected")
    cache_dir = tmp_path / "cache"
    for source in (f"{base}/cifar.tar", str(root / "cifar.tar"), (root / "cifar.tar").as_uri()):
        with pytest.raises(DatasetError) as exc:
            DatasetCache(cache_dir).fetch(DatasetSpec(name="cifar", source=source, sha256=wrong))
        assert str(exc.value) == f"dataset 'cifar': sha256 mismatch (expected {wrong}, got {sha(DATA)})"
        assert cache_files(cache_dir) == []


def test_a_cached_file_changed_since_is_fetched_again(tmp_path: Path) -> None:
    src = tmp_path / "d.bin"
    src.write_bytes(DATA)
    spec = DatasetSpec(name="d", source=str(src), sha256=sha(DATA))
    cache = DatasetCache(tmp_path / "cache")
    cached = cache.fetch(spec)
    assert cached.stat().st_mode & 0o222 == 0, "cached datasets are read-only"
    cached.chmod(0o644)
    cached.write_bytes(b"tampered through a hard link")
    assert cache.fetch(spec).read_bytes() == DATA


def test_sources_that_cannot_be_read(tmp_path: Path, http_root: tuple[str, Path, list[str]]) -> None:
    base, _, _ = http_root
    cache = DatasetCache(tmp_path / "cache")
    folder = tmp_path / "a_folder"
    folder.mkdir()
    cases = [
        (str(tmp_path / "nope.bin"), "not found"),
        (str(folder), "is a folder; sources must be files"),
        (f"{base}/missing.bin", "HTTP 404"),
        ("file://elsewhere/x.bin", "only local files"),
        ("http://user:hunter2@127.0.0.1:1/x?token=abc", "download from http://127.0.0.1:1/x failed"),
    ]
    for source, message in cases:
        with pytest.raises(DatasetError, match=r"^dataset 'd': ") as exc:
            cache.fetch(DatasetSpec(name="d", source=source, sha256="0" * 64))
        assert message in str(exc.value), str(exc.value)
        assert "hunter2" not in str(exc.value) and "token" not in str(exc.value)
    assert cache_files(tmp_path / "cache") == []
