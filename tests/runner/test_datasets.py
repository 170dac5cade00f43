"""DatasetCache: local paths, file:// and http(s) sources, verified by SHA-256, cached by source
and digest. (The security rules, roots, addresses, caps and the poisoned cache, have their own
tests in tests/security/test_datasets_*.py and test_api7_ssrf.py.)"""

from __future__ import annotations

import hashlib
import socket
import threading
from collections.abc import Iterator
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from fetchml.core.models import DatasetSpec
from fetchml.runner.datasets import DatasetCache, DatasetError, DatasetPolicy

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
    """Every file in the cache (entries, stamps, leftovers), relative to it."""
    return (
        sorted(str(p.relative_to(cache)) for p in cache.rglob("*") if p.is_file()) if cache.exists() else []
    )


def entries(cache: Path) -> list[Path]:
    return [p for p in cache.rglob("*") if p.is_file() and not p.name.startswith(".")]


def local_cache(tmp_path: Path) -> DatasetCache:
    """A cache whose worker allows local sources under tmp_path."""
    return DatasetCache(tmp_path / "cache", DatasetPolicy(roots=(tmp_path,)))


def loopback_cache(tmp_path: Path) -> DatasetCache:
    """A cache whose worker may download from loopback (the test servers live there)."""
    return DatasetCache(tmp_path / "cache", DatasetPolicy(allow_private=True))


def test_a_local_path_is_copied_into_the_cache(tmp_path: Path) -> None:
    src = tmp_path / "train.csv"
    src.write_bytes(DATA)
    got = local_cache(tmp_path).fetch(DatasetSpec(name="mnist", source=str(src), sha256=sha(DATA)))
    assert got.name == sha(DATA) and got.parent.parent == tmp_path / "cache"
    assert got.read_bytes() == DATA
    assert not got.samefile(src)
    assert entries(tmp_path / "cache") == [got]
    assert not [n for n in cache_files(tmp_path / "cache") if n.endswith(".part")]
    # Only the worker can enter the cache folders, and the entry is read-only.
    assert (tmp_path / "cache").stat().st_mode & 0o777 == 0o700
    assert got.parent.stat().st_mode & 0o777 == 0o700
    assert got.stat().st_mode & 0o777 == 0o444


def test_a_file_url_is_read(tmp_path: Path) -> None:
    src = tmp_path / "with space" / "d.bin"
    src.parent.mkdir()
    src.write_bytes(DATA)
    got = local_cache(tmp_path).fetch(DatasetSpec(name="d", source=src.as_uri(), sha256=sha(DATA)))
    assert got.read_bytes() == DATA


def test_an_http_source_is_streamed(tmp_path: Path, http_root: tuple[str, Path, list[str]]) -> None:
    base, root, hits = http_root
    (root / "cifar.tar").write_bytes(DATA)
    spec = DatasetSpec(name="cifar", source=f"{base}/cifar.tar", sha256=sha(DATA))
    got = loopback_cache(tmp_path).fetch(spec)
    assert got.read_bytes() == DATA
    assert hits == ["/cifar.tar"]


def test_a_cache_hit_does_not_fetch_again(tmp_path: Path, http_root: tuple[str, Path, list[str]]) -> None:
    base, root, hits = http_root
    (root / "d.bin").write_bytes(DATA)
    spec = DatasetSpec(name="d", source=f"{base}/d.bin", sha256=sha(DATA))
    first = loopback_cache(tmp_path).fetch(spec)
    (root / "d.bin").unlink()  # gone from the source: only the cache can answer now
    assert loopback_cache(tmp_path).fetch(spec.model_copy(update={"name": "other"})) == first
    assert hits == ["/d.bin"]


def test_the_same_content_from_another_source_is_another_entry(
    tmp_path: Path, http_root: tuple[str, Path, list[str]]
) -> None:
    base, root, _ = http_root
    (root / "d.bin").write_bytes(DATA)
    cache = DatasetCache(tmp_path / "cache", DatasetPolicy(roots=(tmp_path,), allow_private=True))
    first = cache.fetch(DatasetSpec(name="d", source=f"{base}/d.bin", sha256=sha(DATA)))
    # The digest alone opens nothing: a source that does not have the file misses and fails.
    with pytest.raises(DatasetError, match="not found"):
        cache.fetch(DatasetSpec(name="alias", source=str(tmp_path / "missing.bin"), sha256=sha(DATA)))
    with pytest.raises(DatasetError, match="HTTP 404"):
        cache.fetch(DatasetSpec(name="alias", source=f"{base}/other.bin", sha256=sha(DATA)))
    local = root / "d.bin"
    second = cache.fetch(DatasetSpec(name="local", source=str(local), sha256=sha(DATA)))
    assert second != first and second.read_bytes() == DATA
    # A path is keyed by where it leads: the same file by another spelling is a hit.
    again = cache.fetch(
        DatasetSpec(name="again", source=str(root / ".." / "www" / "d.bin"), sha256=sha(DATA))
    )
    assert again == second


def test_a_mismatch_fails_without_telling_the_digest_and_leaves_nothing_cached(
    tmp_path: Path, http_root: tuple[str, Path, list[str]]
) -> None:
    base, root, _ = http_root
    (root / "cifar.tar").write_bytes(DATA)
    wrong = sha(b"what the user expected")
    cache = DatasetCache(tmp_path / "cache", DatasetPolicy(roots=(tmp_path,), allow_private=True))
    for source, shown in (
        (f"{base}/cifar.tar", f"{base}/cifar.tar"),
        (str(root / "cifar.tar"), str(root / "cifar.tar")),
        ((root / "cifar.tar").as_uri(), (root / "cifar.tar").as_uri()),
    ):
        with pytest.raises(DatasetError) as exc:
            cache.fetch(DatasetSpec(name="cifar", source=source, sha256=wrong))
        assert str(exc.value) == (f"dataset 'cifar': the file at {shown} does not match the expected sha256")
        assert sha(DATA) not in str(exc.value)
        assert entries(tmp_path / "cache") == []
        assert not [n for n in cache_files(tmp_path / "cache") if n.endswith(".part")]


def test_a_cached_file_changed_since_is_fetched_again(tmp_path: Path) -> None:
    src = tmp_path / "d.bin"
    src.write_bytes(DATA)
    spec = DatasetSpec(name="d", source=str(src), sha256=sha(DATA))
    cache = local_cache(tmp_path)
    cached = cache.fetch(spec)
    assert cached.stat().st_mode & 0o222 == 0, "cached datasets are read-only"
    cached.chmod(0o644)
    cached.write_bytes(b"tampered through a hard link")
    assert cache.fetch(spec).read_bytes() == DATA


def test_sources_that_cannot_be_read(
    tmp_path: Path, http_root: tuple[str, Path, list[str]], monkeypatch: pytest.MonkeyPatch
) -> None:
    base, _, _ = http_root
    real_getaddrinfo = socket.getaddrinfo

    def resolver(host: str, *args: object, **kwargs: object) -> object:
        if host.endswith(".invalid"):  # answered here: no DNS query leaves the machine
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
        return real_getaddrinfo(host, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(socket, "getaddrinfo", resolver)
    cache = DatasetCache(tmp_path / "cache", DatasetPolicy(roots=(tmp_path,), allow_private=True))
    folder = tmp_path / "a_folder"
    folder.mkdir()
    cases = [
        (str(tmp_path / "nope.bin"), "not found"),
        (str(folder), "is a folder; sources must be files"),
        (f"{base}/missing.bin", "HTTP 404"),
        ("file://elsewhere/x.bin", "only local files"),
        ("http://user:hunter2@127.0.0.1:1/x?token=abc", "download from http://127.0.0.1:1/x failed"),
        ("http://no-such-host.invalid/x", "cannot resolve host 'no-such-host.invalid'"),
    ]
    for source, message in cases:
        with pytest.raises(DatasetError, match=r"^dataset 'd': ") as exc:
            cache.fetch(DatasetSpec(name="d", source=source, sha256="0" * 64))
        assert message in str(exc.value), str(exc.value)
        assert "hunter2" not in str(exc.value) and "token" not in str(exc.value)
    assert entries(tmp_path / "cache") == []


def test_redirects_are_followed_each_hop_checked(
    tmp_path: Path, http_root: tuple[str, Path, list[str]]
) -> None:
    """A loopback server answering 302 to a file it serves (allowed: the worker allows loopback)."""
    base, root, hits = http_root
    (root / "real.bin").write_bytes(DATA)
    # SimpleHTTPRequestHandler redirects a folder without its trailing slash (301), so a
    # redirect to a file needs a server of its own.
    from http.server import BaseHTTPRequestHandler

    class Redirect(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(302)
            self.send_header("Location", f"{base}/real.bin")
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Redirect)
    t = threading.Thread(target=server.serve_forever, daemon=True)
    t.start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/start"
        got = loopback_cache(tmp_path).fetch(DatasetSpec(name="d", source=url, sha256=sha(DATA)))
        assert got.read_bytes() == DATA and hits == ["/real.bin"]
        # A redirect loop ends after a bounded number of hops.
        loop = f"http://127.0.0.1:{server.server_address[1]}/loop"
        Redirect.do_GET = lambda self: (  # type: ignore[method-assign]
            self.send_response(302),
            self.send_header("Location", loop),
            self.send_header("Content-Length", "0"),
            self.end_headers(),
        )[-1]
        with pytest.raises(DatasetError, match="more than 5 redirects"):
            loopback_cache(tmp_path).fetch(DatasetSpec(name="d", source=loop, sha256="1" * 64))
    finally:
        server.shutdown()
        server.server_close()
        t.join(5)
