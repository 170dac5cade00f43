"""The clocks services read: the system clock and the manual test clock (the offset-file clock,
which reads a file, is tested in tests/host/test_clock.py)."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta

import pytest

from fetchml.core.clock import SYSTEM_CLOCK, Clock, ManualClock, SystemClock

T0 = datetime(2030, 1, 1, 12, 0, tzinfo=UTC)


def test_system_clock_is_aware_utc_and_real() -> None:
    before = datetime.now(UTC)
    now = SYSTEM_CLOCK.now()
    after = datetime.now(UTC)
    assert now.tzinfo is not None and now.utcoffset() == timedelta(0)
    assert before <= now <= after
    m1 = SYSTEM_CLOCK.monotonic()
    m2 = time.monotonic()
    assert m1 <= m2 < m1 + 5


def test_every_clock_satisfies_the_protocol() -> None:
    for clock in (SystemClock(), ManualClock(T0)):
        assert isinstance(clock, Clock)


def test_manual_clock_stands_still_until_advanced() -> None:
    clock = ManualClock(T0)
    assert clock.now() == T0 and clock.monotonic() == 0.0
    assert clock.now() == T0  # no drift on its own
    clock.advance(90.5)
    assert clock.now() == T0 + timedelta(seconds=90.5)
    assert clock.monotonic() == 90.5
    clock.advance(0)
    assert clock.monotonic() == 90.5


def test_manual_clock_refuses_going_back_or_nan_and_naive_starts() -> None:
    clock = ManualClock(T0)
    for bad in (-1.0, float("nan")):
        with pytest.raises(ValueError):
            clock.advance(bad)
    assert clock.now() == T0
    with pytest.raises(ValueError):
        ManualClock(datetime(2030, 1, 1))


def test_manual_clock_converts_its_start_to_utc() -> None:
    from zoneinfo import ZoneInfo

    start = datetime(2030, 1, 1, 13, 0, tzinfo=ZoneInfo("Europe/Berlin"))
    assert ManualClock(start).now().utcoffset() == timedelta(0)
    assert ManualClock(start).now() == T0


def test_manual_clock_defaults_to_real_now() -> None:
    before = datetime.now(UTC)
    assert before <= ManualClock().now() <= datetime.now(UTC)
