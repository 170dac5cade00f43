"""The lines a dataset fetch writes into its task's log (fetchml.runner.dataset_progress): their
rate is bounded however the bytes come, and a DatasetCache fetch from a real file or a loopback
HTTP server tells where from, how far, and how it ended."""

from __future__ import annotations

import hashlib
import re
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from fetchml.core.models import DatasetSpec
from fetchml.runner.dataset_progress import INTERVAL, FetchReport, size_text
from fetchml.runner.datasets import DatasetCache, DatasetError, DatasetPolicy

DATA = b"0123456789abcdef" * 150_000  # 2.4 MB: three 1 MiB chunks from a file


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_sizes_read_as_download_tools_show_them() -> None:
    assert [size_text(n) for n in (0, 999, 1000, 12_000_000, 1_500_000_000, 3 * 10**15)] == [
        "0 B",
        "999 B",
        "1.0 kB",
        "12.0 MB",
        "1.5 GB",
        "3000.0 TB",
    ]


def test_a_fast_fetch_of_known_size_says_each_ten_percent_once() -> None:
    lines: list[str] = []
    report = FetchReport("mnist", lines.append, clock=Clock())
    report.fetching("https://example.org/mnist.tar")
    report.expect(30_000_000)
    for _ in range(1000):  # 30 kB pieces, all at the same instant
        report.advance(30_000)
    report.verified()
    assert lines[0] == "fetchml: dataset mnist: fetching from https://example.org/mnist.tar"
    assert lines[1] == "fetchml: dataset mnist: 10% (3.0 MB of 30.0 MB)"
    assert lines[4] == "fetchml: dataset mnist: 40% (12.0 MB of 30.0 MB)"
    assert [int(re.findall(r"(\d+)%", line)[0]) for line in lines[1:-1]] == list(range(10, 101, 10))
    assert lines[-1] == "fetchml: dataset mnist: 30.0 MB, verified sha256, cached"


def test_a_slow_fetch_also_says_how_far_every_few_seconds_and_no_more() -> None:
    clock = Clock()
    lines: list[str] = []
    report = FetchReport("big", lines.append, clock=clock)
    report.fetching("/data/big.tar")
    report.expect(10_000_000)
    for _ in range(100):  # 1% a second: 100 s
        clock.now += 1.0
        report.advance(100_000)
    progress = lines[1:]
    # Every 10% step is told, and between them a line every INTERVAL seconds: never a line a chunk.
    assert all(f"{p}% " in " ".join(progress) for p in range(10, 101, 10)), progress
    assert len(progress) <= 100 / INTERVAL + 10, progress
    assert len(progress) >= 100 / INTERVAL, progress


def test_an_unknown_size_is_told_as_bytes_so_far_at_the_same_bounded_rate() -> None:
    clock = Clock()
    lines: list[str] = []
    report = FetchReport("stream", lines.append, clock=clock)
    report.fetching("https://example.org/s")
    report.expect(None)
    for _ in range(40):
        clock.now += 0.5
        report.advance(1_000_000)
    report.verified()
    assert lines[1:-1] == [f"fetchml: dataset stream: {mb}.0 MB so far" for mb in (10, 20, 30, 40)]
    assert lines[-1] == "fetchml: dataset stream: 40.0 MB, verified sha256, cached"


def test_without_a_log_nothing_is_said_or_counted() -> None:
    report = FetchReport("quiet", None)
    report.fetching("x")
    report.expect(10)
    report.advance(10)
    report.verified()
    report.failed("why")
    assert report.done == 0


# -- through DatasetCache -------------------------------------------------------------------------


class _Handler(BaseHTTPRequestHandler):
    # HTTP/1.0: without a Content-Length, the body ends when the connection closes.
    protocol_version = "HTTP/1.0"

    def do_GET(self) -> None:
        self.send_response(200)
        if self.path.split("?")[0] == "/sized":
            self.send_header("Content-Length", str(len(DATA)))
        self.end_headers()
        self.wfile.write(DATA)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def base_url() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


def _spec(source: str, sha256: str | None = None) -> DatasetSpec:
    return DatasetSpec(name="d", source=source, sha256=sha256 or hashlib.sha256(DATA).hexdigest())


def test_a_local_fetch_then_a_cache_hit(tmp_path: Path) -> None:
    src = tmp_path / "d.bin"
    src.write_bytes(DATA)
    cache = DatasetCache(tmp_path / "cache", DatasetPolicy(roots=(tmp_path,)))
    lines: list[str] = []
    cache.fetch(_spec(str(src)), say=lines.append)
    assert lines == [
        f"fetchml: dataset d: fetching from {src}",
        "fetchml: dataset d: 43% (1.0 MB of 2.4 MB)",
        "fetchml: dataset d: 87% (2.1 MB of 2.4 MB)",
        "fetchml: dataset d: 100% (2.4 MB of 2.4 MB)",
        "fetchml: dataset d: 2.4 MB, verified sha256, cached",
    ]
    again: list[str] = []
    cache.fetch(_spec(src.as_uri()), say=again.append)  # the same file by another name: a hit
    assert again == ["fetchml: dataset d: cache hit (2.4 MB)"]


def test_http_with_and_without_a_length(tmp_path: Path, base_url: str) -> None:
    cache = DatasetCache(tmp_path / "cache", DatasetPolicy(allow_private=True))
    sized: list[str] = []
    cache.fetch(_spec(f"{base_url}/sized?token=secret"), say=sized.append)
    assert sized[0] == f"fetchml: dataset d: fetching from {base_url}/sized"  # no query: tokens live there
    assert sized[-2] == "fetchml: dataset d: 100% (2.4 MB of 2.4 MB)", sized
    assert sized[-1] == "fetchml: dataset d: 2.4 MB, verified sha256, cached"
    unsized: list[str] = []
    cache.fetch(_spec(f"{base_url}/unsized"), say=unsized.append)
    # A fast fetch of unknown size: no line a chunk, only where from and how it ended.
    assert unsized == [
        f"fetchml: dataset d: fetching from {base_url}/unsized",
        "fetchml: dataset d: 2.4 MB, verified sha256, cached",
    ]


def test_a_failed_fetch_says_why_in_the_log_too(tmp_path: Path) -> None:
    src = tmp_path / "d.bin"
    src.write_bytes(DATA)
    lines: list[str] = []
    cache = DatasetCache(tmp_path / "cache", DatasetPolicy(roots=(tmp_path,)))
    with pytest.raises(DatasetError, match="does not match"):
        cache.fetch(_spec(str(src), "0" * 64), say=lines.append)
    assert lines[-1] == f"fetchml: dataset d: failed: the file at {src} does not match the expected sha256"
    refused: list[str] = []
    with pytest.raises(DatasetError, match="outside the dataset roots"):
        cache.fetch(_spec("/etc/hostname"), say=refused.append)
    # Refused before anything was read: one line, no `fetching from`.
    assert refused == [
        "fetchml: dataset d: failed: source /etc/hostname is outside the dataset roots this worker allows"
    ]
