"""A dataset fetch, told in the task's own log (what `fetchml logs` and `fetchml run` show), so a
task that sits in `preparing` for minutes says why:

    fetchml: dataset mnist: fetching from https://example.org/mnist.tar
    fetchml: dataset mnist: 40% (12.0 MB of 30.0 MB)
    fetchml: dataset mnist: 30.0 MB, verified sha256, cached

or `fetchml: dataset mnist: cache hit (30.0 MB)`, or `... failed: WHY` (the same words as the
task's error). Progress lines are bounded: one per 10% step of a known size, and besides those one
every INTERVAL seconds while bytes arrive (the only kind when the size is unknown), so a fast
fetch writes at most ten and a slow one one every few seconds, never one per chunk.
"""

from __future__ import annotations

import time
from collections.abc import Callable

Say = Callable[[str], None]

STEP_PERCENT = 10
INTERVAL = 5.0  # seconds


def size_text(n: int) -> str:
    """Decimal units, as download tools show them: 999 B, 12.0 MB, 1.5 GB."""
    if n < 1000:
        return f"{n} B"
    value = float(n)
    for unit in ("kB", "MB", "GB", "TB"):
        value /= 1000
        if value < 1000 or unit == "TB":
            return f"{value:.1f} {unit}"
    raise AssertionError("unreachable")


class FetchReport:
    """The log lines of one dataset's fetch; silent when `say` is None."""

    def __init__(self, name: str, say: Say | None, clock: Callable[[], float] = time.monotonic) -> None:
        self.name = name
        self.say = say
        self.clock = clock
        self.total: int | None = None
        self.done = 0
        self._step = 0  # the last 10% step told
        self._last = 0.0  # when the last line was written

    def _line(self, text: str) -> None:
        if self.say is not None:
            self.say(f"fetchml: dataset {self.name}: {text}")
            self._last = self.clock()

    def fetching(self, where: str) -> None:
        self._line(f"fetching from {where}")

    def expect(self, total: int | None) -> None:
        """The size, once known (a local file's, an HTTP Content-Length)."""
        self.total = total if total else None

    def advance(self, n: int) -> None:
        if self.say is None:
            return
        self.done += n
        now = self.clock()
        if self.total is not None:
            percent = min(100, self.done * 100 // self.total)
            step = percent // STEP_PERCENT
            if step > self._step or now - self._last >= INTERVAL:
                self._step = step
                self._line(f"{percent}% ({size_text(self.done)} of {size_text(self.total)})")
        elif now - self._last >= INTERVAL:
            self._line(f"{size_text(self.done)} so far")

    def verified(self) -> None:
        self._line(f"{size_text(self.done)}, verified sha256, cached")

    def hit(self, size: int) -> None:
        self._line(f"cache hit ({size_text(size)})")

    def failed(self, why: str) -> None:
        self._line(f"failed: {why}")
