"""The offset-file clock: the system clock plus the seconds written in a file."""

from __future__ import annotations

import os
import threading
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from fetchml.core.clock import SYSTEM_CLOCK, Clock, ManualClock
from fetchml.host.clock import OffsetFileClock, clock_from_settings, write_offset_file

T0 = datetime(2030, 1, 1, 12, 0, tzinfo=UTC)


def test_the_offset_clock_satisfies_the_protocol(tmp_path: Path) -> None:
    assert isinstance(OffsetFileClock(tmp_path / "off"), Clock)


def test_offset_clock_without_file_is_the_base(tmp_path: Path) -> None:
    base = ManualClock(T0)
    clock = OffsetFileClock(tmp_path / "offset", base)
    assert clock.offset() == 0.0
    assert clock.now() == T0 and clock.monotonic() == 0.0


def test_offset_clock_adds_the_file_and_sees_every_rewrite(tmp_path: Path) -> None:
    path = tmp_path / "offset"
    base = ManualClock(T0)
    clock = OffsetFileClock(path, base)
    # Many rewrites in quick succession, most within one mtime tick: each is seen (new inode).
    for n in range(1, 30):
        write_offset_file(path, n * 10.0)
        assert clock.now() == T0 + timedelta(seconds=n * 10.0)
        assert clock.monotonic() == n * 10.0
    base.advance(5)
    assert clock.now() == T0 + timedelta(seconds=295)


def test_offset_clock_reads_the_file_only_when_it_changes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "offset"
    write_offset_file(path, 60)
    clock = OffsetFileClock(path, ManualClock(T0))
    reads: list[Path] = []
    real = Path.read_text

    def counting(self: Path, *a: object, **k: object) -> str:
        reads.append(self)
        return real(self)

    monkeypatch.setattr(Path, "read_text", counting)
    for _ in range(100):
        assert clock.now() == T0 + timedelta(seconds=60)
    assert len(reads) == 1
    write_offset_file(path, 61)
    assert clock.offset() == 61.0
    assert len(reads) == 2


@pytest.mark.parametrize("content", ["", "soon", "nan", "inf", "-inf", "1e400"])
def test_offset_clock_ignores_a_bad_file_keeping_the_last_good_offset(
    tmp_path: Path, content: str, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "offset"
    clock = OffsetFileClock(path, ManualClock(T0))
    write_offset_file(path, 30)
    assert clock.offset() == 30.0
    tmp = tmp_path / "tmp"
    tmp.write_text(content)
    os.replace(tmp, path)
    assert clock.offset() == 30.0
    assert "does not hold a number" in caplog.text
    # Logged once per version of the file, not on every read.
    caplog.clear()
    assert clock.offset() == 30.0
    assert caplog.text == ""


def test_offset_clock_file_removed_means_no_offset(tmp_path: Path) -> None:
    path = tmp_path / "offset"
    clock = OffsetFileClock(path, ManualClock(T0))
    write_offset_file(path, 30)
    assert clock.offset() == 30.0
    path.unlink()
    assert clock.now() == T0


def test_offset_clock_monotonic_never_goes_back(tmp_path: Path) -> None:
    path = tmp_path / "offset"
    base = ManualClock(T0)
    clock = OffsetFileClock(path, base)
    write_offset_file(path, 100)
    assert clock.monotonic() == 100.0
    write_offset_file(path, 10)  # lowered: wall time follows, intervals must not turn negative
    assert clock.now() == T0 + timedelta(seconds=10)
    assert clock.monotonic() == 100.0
    base.advance(95)
    assert clock.monotonic() == 105.0


def test_offset_clock_is_safe_across_threads(tmp_path: Path) -> None:
    path = tmp_path / "offset"
    clock = OffsetFileClock(path)
    errors: list[BaseException] = []
    stop = threading.Event()

    def reader() -> None:
        last = float("-inf")
        try:
            while not stop.is_set():
                m = clock.monotonic()
                assert m >= last
                last = m
                assert clock.now().tzinfo is not None
        except BaseException as exc:  # handed to the main thread
            errors.append(exc)

    threads = [threading.Thread(target=reader) for _ in range(4)]
    for t in threads:
        t.start()
    for n in range(200):
        write_offset_file(path, float(n))
    stop.set()
    for t in threads:
        t.join(10)
    assert not errors
    assert clock.offset() == 199.0


def test_clock_from_settings(tmp_path: Path) -> None:
    assert clock_from_settings(None) is SYSTEM_CLOCK
    clock = clock_from_settings(tmp_path / "offset")
    assert isinstance(clock, OffsetFileClock) and clock.path == tmp_path / "offset"
