"""The queue in scheduling order: how the server ranks queued tasks (`Aging`, read off the tasks
themselves by `infer_aging`) and the sorted index the Queue pane reads (`QueueIndex`)."""

from __future__ import annotations

import bisect
import statistics
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

from fetchml.core.aging import DEFAULT_AGING_CAP, DEFAULT_AGING_RATE
from fetchml.tui.models import parse_time


@dataclass(slots=True)
class Aging:
    """How the server ranks queued tasks: `priority_aged` (priority + rate x hours waited, at most
    `cap`; core/aging.py), then FIFO. Scores are taken at one reference time for every task (a
    task that came after it scores below its priority, by the same line), so the order holds as
    time passes without re-scoring: all queued tasks age at the same rate."""

    rate: float = DEFAULT_AGING_RATE
    cap: float = DEFAULT_AGING_CAP
    ref: float = 0.0

    def score(self, priority: int, created: float | None) -> float:
        if self.rate <= 0 or created is None:
            return float(priority)
        return min(self.cap, priority + self.rate * (self.ref - created) / 3600.0)


def infer_aging(queued: Iterable[dict[str, Any]], now: float) -> Aging:
    """The server's aging rate, read off queued tasks' `priority_aged` (the server does not
    publish its settings); the defaults when nothing tells."""
    rates: list[float] = []
    capped: list[float] = []
    for t in queued:
        created = parse_time(t.get("created_at"))
        aged = t.get("priority_aged")
        prio = t.get("priority")
        if created is None or not isinstance(aged, (int, float)) or not isinstance(prio, int):
            continue
        hours = (now - created) / 3600.0
        if hours < 1 / 60:  # too young to tell a rate from clock skew
            continue
        rate = (float(aged) - prio) / hours
        if rate < 0.01 and abs(aged - prio) < 1e-9:
            rates.append(0.0)
        elif float(aged) < DEFAULT_AGING_CAP - 1e-6:
            rates.append(rate)
        else:
            capped.append(float(aged))
    rate = statistics.median(rates) if rates else DEFAULT_AGING_RATE
    cap = max(capped) if capped else DEFAULT_AGING_CAP
    return Aging(rate=max(0.0, rate), cap=cap, ref=now)


class QueueIndex:
    """Queued task ids in scheduling order. Keys are (-score, created, id): add, remove and
    position are bisections, and a position reads in O(1), so a repaint reads only the rows on
    screen whatever the queue's length."""

    def __init__(self) -> None:
        self._keys: list[tuple[float, float, str]] = []
        self._key_of: dict[str, tuple[float, float, str]] = {}

    def __len__(self) -> int:
        return len(self._keys)

    def __contains__(self, task_id: object) -> bool:
        return task_id in self._key_of

    def __getitem__(self, i: int) -> str:
        return self._keys[i][2]

    def __iter__(self) -> Iterator[str]:
        return (k[2] for k in self._keys)

    def add(self, task_id: str, score: float, created: float | None) -> None:
        key = (-score, created if created is not None else float("inf"), task_id)
        old = self._key_of.get(task_id)
        if old == key:
            return
        if old is not None:
            self._drop(old)
        self._key_of[task_id] = key
        bisect.insort(self._keys, key)

    def remove(self, task_id: str) -> bool:
        key = self._key_of.pop(task_id, None)
        if key is None:
            return False
        self._drop(key)
        return True

    def _drop(self, key: tuple[float, float, str]) -> None:
        i = bisect.bisect_left(self._keys, key)
        if i < len(self._keys) and self._keys[i] == key:
            del self._keys[i]

    def position(self, task_id: str) -> int | None:
        key = self._key_of.get(task_id)
        return None if key is None else bisect.bisect_left(self._keys, key)

    def load(self, entries: Iterable[tuple[str, float, float | None]]) -> None:
        """Replace the contents at once (a seed): one sort instead of n insertions."""
        self._key_of = {
            tid: (-score, created if created is not None else float("inf"), tid)
            for tid, score, created in entries
        }
        self._keys = sorted(self._key_of.values())

    def clear(self) -> None:
        self._keys.clear()
        self._key_of.clear()
