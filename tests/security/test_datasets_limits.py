"""Unbounded dataset fetches (audit finding 6a): `source: /dev/urandom` (or an endless HTTP stream)
was read without a limit, and cancelling the task did not stop it.

Now a fetch stops past `--max-dataset-bytes` (Content-Length is checked up front) and removes
what it wrote, every read has a timeout, and a cancel ends a fetch at once, even one waiting on a
silent server. All servers here are on 127.0.0.1, so the worker runs with
--allow-private-datasets."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from fetchml.core.models import DatasetSpec
from fetchml.runner.datasets import DatasetCache, DatasetCancelled, DatasetError, DatasetPolicy
from tests.e2e.conftest import Cluster
from tests.e2e.conftest import cluster as cluster  # the fixture, for the end-to-end tests

CAP = 1_000_000
ANY = "0" * 64
MAX_SERVED = 512 * 1024 * 1024  # every server stops on its own after this much, or 60 s


class Stream:
    """A loopback server whose every answer is `kind`: endless (no length), huge (a length far
    over the cap), trickle (a byte every 50 ms), or silent (headers, then nothing)."""

    def __init__(self, kind: str) -> None:
        self.requests = 0
        self.sent = 0
        self.closed = threading.Event()  # the client went away mid-body
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                outer.requests += 1
                self.send_response(200)
                if kind == "huge":
                    self.send_header("Content-Length", str(10**12))
                self.end_headers()
                deadline = time.monotonic() + 60
                chunk, pause = (b"\0" * 65536, 0.0) if kind in ("endless", "huge") else (b"x", 0.05)
                try:
                    while outer.sent < MAX_SERVED and time.monotonic() < deadline:
                        if kind == "silent":
                            # Poke the socket now and then: a gone client shows up as an error.
                            time.sleep(0.05)
                            self.wfile.write(b"")
                            self.connection.settimeout(0.05)
                            try:
                                if self.connection.recv(1) == b"":
                                    break
                            except TimeoutError:
                                continue
                            continue
                        self.wfile.write(chunk)
                        self.wfile.flush()
                        outer.sent += len(chunk)
                        if pause:
                            time.sleep(pause)
                except OSError:
                    pass
                outer.closed.set()

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/data.bin"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(5)


@pytest.fixture
def stream() -> Iterator[Callable[[str], Stream]]:
    started: list[Stream] = []

    def start(kind: str) -> Stream:
        started.append(Stream(kind))
        return started[-1]

    yield start
    for s in started:
        s.close()


def leftovers(cache_dir: Path) -> list[Path]:
    return [p for p in cache_dir.rglob("*") if p.is_file()] if cache_dir.exists() else []


def test_an_endless_stream_is_cut_at_the_cap_and_nothing_is_kept(
    tmp_path: Path, stream: Callable[[str], Stream]
) -> None:
    s = stream("endless")
    cache = DatasetCache(tmp_path / "cache", DatasetPolicy(allow_private=True, max_bytes=CAP))
    started = time.monotonic()
    with pytest.raises(DatasetError, match=f"larger than this worker's limit of {CAP} bytes"):
        cache.fetch(DatasetSpec(name="d", source=s.url, sha256=ANY))
    assert time.monotonic() - started < 10
    assert leftovers(tmp_path / "cache") == []
    assert s.closed.wait(10)
    # What the server got rid of includes the kernel's socket buffers (a few MiB on loopback).
    assert s.sent < CAP + 16 * 1024 * 1024, "the download stopped right after the cap"


def test_a_content_length_over_the_cap_is_refused_before_the_body(
    tmp_path: Path, stream: Callable[[str], Stream]
) -> None:
    s = stream("huge")
    cache = DatasetCache(tmp_path / "cache", DatasetPolicy(allow_private=True, max_bytes=CAP))
    with pytest.raises(DatasetError, match="larger than this worker's limit"):
        cache.fetch(DatasetSpec(name="d", source=s.url, sha256=ANY))
    assert leftovers(tmp_path / "cache") == []


def test_a_local_file_over_the_cap_is_refused(tmp_path: Path) -> None:
    big = tmp_path / "big.bin"
    big.write_bytes(b"\0" * (CAP + 1))
    cache = DatasetCache(tmp_path / "cache", DatasetPolicy(roots=(tmp_path,), max_bytes=CAP))
    with pytest.raises(DatasetError, match="larger than this worker's limit"):
        cache.fetch(DatasetSpec(name="d", source=str(big), sha256=ANY))
    assert leftovers(tmp_path / "cache") == []


def test_a_silent_server_runs_into_the_read_timeout(tmp_path: Path, stream: Callable[[str], Stream]) -> None:
    s = stream("silent")
    cache = DatasetCache(tmp_path / "cache", DatasetPolicy(allow_private=True, read_timeout=0.5))
    started = time.monotonic()
    with pytest.raises(DatasetError, match="ReadTimeout"):
        cache.fetch(DatasetSpec(name="d", source=s.url, sha256=ANY))
    assert time.monotonic() - started < 5


@pytest.mark.parametrize("kind", ["trickle", "silent"])
def test_a_cancel_ends_a_download_at_once(tmp_path: Path, stream: Callable[[str], Stream], kind: str) -> None:
    s = stream(kind)
    cache = DatasetCache(tmp_path / "cache", DatasetPolicy(allow_private=True, read_timeout=60))
    cancel = threading.Event()
    threading.Timer(0.5, cancel.set).start()
    started = time.monotonic()
    with pytest.raises(DatasetCancelled):
        cache.fetch(DatasetSpec(name="d", source=s.url, sha256=ANY), cancel)
    assert time.monotonic() - started < 3, "well before the 60 s read timeout"
    assert s.closed.wait(5), "the connection was closed"
    assert leftovers(tmp_path / "cache") == []


# -- end to end: a real worker process ----------------------------------------------------------


def test_a_worker_cuts_an_endless_download_at_its_cap(
    cluster: Cluster, tmp_path: Path, stream: Callable[[str], Stream]
) -> None:
    s = stream("endless")
    cluster.start_worker(
        "w1", "--executor", "local", "--allow-private-datasets", "--max-dataset-bytes", str(CAP)
    )
    tid = cluster.submit(entrypoint="true", dataset_specs=[{"name": "d", "source": s.url, "sha256": ANY}])
    t = cluster.wait_status(tid, "completed", "failed", timeout=30)
    assert t["status"] == "failed" and f"larger than this worker's limit of {CAP} bytes" in t["error"], t
    assert s.sent < CAP + 16 * 1024 * 1024
    assert leftovers(tmp_path / "work-w1" / "datasets") == []


def test_a_cancel_during_a_slow_download_ends_the_task_promptly(
    cluster: Cluster, stream: Callable[[str], Stream]
) -> None:
    s = stream("silent")
    cluster.start_worker("w1", "--executor", "local", "--allow-private-datasets")
    tid = cluster.submit(entrypoint="true", dataset_specs=[{"name": "d", "source": s.url, "sha256": ANY}])
    cluster.wait_for(lambda: s.requests > 0, what="the download to start")
    started = time.monotonic()
    with cluster.server.http(cluster.user) as http:
        assert http.delete(f"/v1/tasks/{tid}").status_code == 204
    t = cluster.wait_status(tid, "failed", timeout=20)
    assert t["error"] == "cancelled", t
    assert time.monotonic() - started < 10, "not after the 60 s read timeout"
    assert s.closed.wait(10), "the worker closed the connection"
