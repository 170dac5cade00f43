from __future__ import annotations

from datetime import UTC, datetime


def utcnow() -> datetime:
    return datetime.now(UTC)


def rfc3339(dt: datetime) -> str:
    """UTC, microsecond precision, 'Z' suffix: one spelling, so hashes over it are stable."""
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    elif dt.tzinfo is not UTC:
        dt = dt.astimezone(UTC)
    if dt.year < 1000:
        return dt.strftime("%Y-%m-%dT%H:%M:%S.%fZ")  # glibc's %Y does not pad years below 1000
    # isoformat is a few times cheaper than strftime, and spells the same text from year 1000 on
    return dt.replace(tzinfo=None).isoformat(timespec="microseconds") + "Z"
