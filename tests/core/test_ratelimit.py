"""TokenBuckets: capacity = the per-minute figure, steady refill, whole-second waits."""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from fetchml.core.ratelimit import TokenBuckets


def drain(b: TokenBuckets, key: str, now: float) -> int:
    """Takes until refused; returns how many were allowed."""
    n = 0
    while b.take(key, now) == 0:
        n += 1
        assert n < 100_000
    return n


def test_capacity_is_the_per_minute_figure() -> None:
    b = TokenBuckets(5)
    assert [b.take("k", 100.0) for _ in range(5)] == [0] * 5
    assert b.take("k", 100.0) > 0


def test_burst_overrides_capacity() -> None:
    b = TokenBuckets(60, burst=3)
    assert drain(b, "k", 0.0) == 3


def test_retry_after_is_whole_seconds_until_next_token() -> None:
    b = TokenBuckets(5)  # one token every 12 s
    drain(b, "k", 0.0)
    wait = b.take("k", 0.0)
    assert isinstance(wait, int) and wait == 12
    # 5 s later 7 s remain; the answer is rounded up, never down to 0.
    assert b.take("k", 5.0) == 7
    assert b.take("k", 11.5) == 1


def test_refill_is_proportional_to_elapsed_time() -> None:
    b = TokenBuckets(60)  # one per second
    drain(b, "k", 0.0)
    assert b.take("k", 0.5) > 0
    assert b.take("k", 1.0) == 0
    assert b.take("k", 1.0) > 0
    assert b.take("k", 4.0) == 0  # 3 s -> 3 tokens
    assert b.take("k", 4.0) == 0
    assert b.take("k", 4.0) == 0
    assert b.take("k", 4.0) > 0


def test_refill_never_exceeds_capacity() -> None:
    b = TokenBuckets(10)
    drain(b, "k", 0.0)
    assert drain(b, "k", 1e6) == 10


def test_refused_requests_do_not_consume() -> None:
    b = TokenBuckets(60)
    drain(b, "k", 0.0)
    for _ in range(100):
        assert b.take("k", 0.0) > 0
    assert b.take("k", 1.0) == 0


def test_keys_are_independent() -> None:
    b = TokenBuckets(3)
    drain(b, "a", 0.0)
    assert b.take("a", 0.0) > 0
    assert drain(b, "b", 0.0) == 3


def test_max_keys_evicts_least_recently_used() -> None:
    b = TokenBuckets(2, max_keys=2)
    drain(b, "a", 0.0)
    b.take("b", 0.0)
    b.take("c", 0.0)  # evicts "a", the least recently used
    assert len(b._buckets) <= 2
    assert "a" not in b._buckets
    assert b.take("a", 0.0) == 0  # a fresh, full bucket


@pytest.mark.parametrize("per_minute", [1, 7, 60, 600, 6000])
def test_long_run_rate_matches_per_minute(per_minute: int) -> None:
    b = TokenBuckets(per_minute)
    allowed = 0
    steps = 600
    for i in range(steps):  # ten minutes, polled every second, taking greedily
        t = float(i)
        while b.take("k", t) == 0:
            allowed += 1
    # Capacity up front, then per_minute per minute over the ~10 minutes that follow.
    expected = per_minute + per_minute * (steps - 1) / 60
    assert math.floor(expected) - 1 <= allowed <= math.ceil(expected) + 1


@given(
    per_minute=st.integers(min_value=1, max_value=2_000),
    taken=st.integers(min_value=0, max_value=50),
    elapsed=st.floats(min_value=0, max_value=120, allow_nan=False),
)
def test_retry_after_is_honest(per_minute: int, taken: int, elapsed: float) -> None:
    """After waiting the Retry-After a caller is let through."""
    b = TokenBuckets(per_minute)
    drain(b, "k", 0.0)
    for _ in range(taken):
        b.take("k", elapsed)
    wait = b.take("k", elapsed)
    if wait:
        assert wait >= 1
        assert b.take("k", elapsed + wait) == 0
