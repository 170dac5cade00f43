"""The bounded line splitter both executors read task output through."""

from __future__ import annotations

import io
import subprocess
import sys
import tracemalloc

from fetchml.core.protocol import MAX_LOG_LINE_CHARS
from fetchml.runner.lines import MAX_LINE_BYTES, LineSplitter, iter_lines, truncation_marker


def split(pieces: list[bytes], max_bytes: int = MAX_LINE_BYTES) -> list[str]:
    s = LineSplitter(max_bytes)
    out: list[str] = []
    for p in pieces:
        out += s.feed(p)
    return out + s.end()


def test_lines_whatever_the_pieces() -> None:
    data = b"one\r\ntwo\n\nthree \xe2\x9c\x93\nlast without newline"
    expected = ["one", "two", "", "three ✓", "last without newline"]
    assert split([data]) == expected
    assert split([data[i : i + 1] for i in range(len(data))]) == expected  # byte by byte
    assert split([b"a\n"]) == ["a"]
    assert split([]) == []
    assert split([b"bad \xff byte\n"]) == ["bad \ufffd byte"]


def test_a_long_line_keeps_its_start_and_says_how_long_it_was() -> None:
    long = b"x" * 100_000
    lines = split([long[:7], long[7:50_000], long[50_000:] + b"\nnext\n"], max_bytes=1000)
    assert lines[1] == "next"
    assert lines[0].startswith("x" * 900) and lines[0].endswith(truncation_marker(100_000))
    assert len(lines[0]) < 1000
    # Exactly at the limit: whole. One byte over: truncated.
    assert split([b"y" * 1000 + b"\r\n"], max_bytes=1000) == ["y" * 1000]
    assert split([b"y" * 1001 + b"\n"], max_bytes=1000)[0].endswith(truncation_marker(1001))
    # The default fits the server's per-line limit, marker included.
    big = split([b"z" * (MAX_LINE_BYTES * 3)])[0]
    assert len(big) <= MAX_LOG_LINE_CHARS and big.endswith(truncation_marker(MAX_LINE_BYTES * 3))


def test_truncation_never_splits_a_character() -> None:
    line = "é" * 1000  # two bytes each
    for max_bytes in (500, 501, 502):
        out = split([line.encode()], max_bytes=max_bytes)[0]
        kept = out.split("…")[0]
        assert set(kept) == {"é"}, kept[-3:]


def test_a_huge_line_costs_no_memory() -> None:
    """200 MB without a newline, in 64 KiB pieces: memory stays at one capped line."""
    piece = b"x" * 65536
    s = LineSplitter()
    tracemalloc.start()
    try:
        for _ in range(200_000_000 // len(piece)):
            assert s.feed(piece) == []
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 1_000_000, peak
    (line,) = s.feed(b"\n")
    assert line.endswith(truncation_marker(200_000_000 // 65536 * 65536))


def test_iter_lines_from_a_real_pipe() -> None:
    proc = subprocess.Popen(
        [sys.executable, "-c", "import sys; sys.stdout.write('a\\n' + 'b' * 300000 + '\\nc')"],
        stdout=subprocess.PIPE,
    )
    assert proc.stdout is not None
    stream = proc.stdout
    lines = list(iter_lines(lambda: stream.read1(4096), max_bytes=1000))
    proc.wait()
    stream.close()
    assert lines[0] == "a" and lines[2] == "c"
    assert lines[1].endswith(truncation_marker(300000))
    assert list(iter_lines(io.BytesIO(b"").read)) == []
