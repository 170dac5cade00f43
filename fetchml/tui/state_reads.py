"""What the panes read from the view state: ids in the order shown, each list made once per
change of its pane (`versions`), and the status bar's summary."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar, cast

from fetchml.tui.filters import NO_FILTER, TaskFilter
from fetchml.tui.models import ENDED, QUEUE, QUEUED, RESERVATIONS, RUNNING, WORKERS, TaskView
from fetchml.tui.queue_index import QueueIndex
from fetchml.tui.state_base import StateBase

_V = TypeVar("_V")


class StateReads(StateBase):
    """The reads, cached per pane version: a repaint of an unchanged pane sorts nothing."""

    def _cached(self, name: str, key: Any, make: Callable[[], _V]) -> _V:
        hit = self._cache.get(name)
        if hit is not None and hit[0] == key:
            return cast(_V, hit[1])
        value = make()
        self._cache[name] = (key, value)
        return value

    def queue_ids(self, flt: TaskFilter = NO_FILTER, sort: str = "schedule") -> QueueIndex | list[str]:
        """Queued ids in the order shown. Unfiltered in scheduling order: the index itself (no
        copy); otherwise a list made once per change of the queue."""
        if not flt and sort == "schedule":
            return self.queue

        def make() -> list[str]:
            tasks = self.tasks
            ids = [tid for tid in self.queue if flt.matches(tasks[tid])] if flt else list(self.queue)
            if sort == "newest":
                ids.sort(key=lambda i: -(tasks[i].created_at or 0.0))
            elif sort == "user":
                ids.sort(key=lambda i: tasks[i].user_id)  # stable: scheduling order within a user
            elif sort == "gpus":
                ids.sort(key=lambda i: -(tasks[i].gpu * tasks[i].node_count))
            return ids

        return self._cached(QUEUE, (self.versions[QUEUE], flt, sort), make)

    def running_ids(self, flt: TaskFilter = NO_FILTER, sort: str = "started") -> list[str]:
        def make() -> list[str]:
            tasks = self.tasks
            ids = [tid for tid in self.running if not flt or flt.matches(tasks[tid])]
            if sort == "worker":
                ids.sort(key=lambda i: tasks[i].worker_id or "")
            elif sort == "user":
                ids.sort(key=lambda i: tasks[i].user_id)
            elif sort == "name":
                ids.sort(key=lambda i: tasks[i].job_name)
            return ids

        return self._cached(RUNNING, (self.versions[RUNNING], flt, sort), make)

    def ended_ids(self, flt: TaskFilter = NO_FILTER) -> list[str]:
        def make() -> list[str]:
            return [tid for tid in reversed(self.ended) if not flt or flt.matches(self.tasks[tid])]

        return self._cached(ENDED, (self.versions[ENDED], flt), make)

    def worker_ids(self, sort: str = "name") -> list[str]:
        def make() -> list[str]:
            ws = self.workers
            ids = sorted(ws, key=lambda i: ws[i].name)
            if sort == "status":
                order = {"active": 0, "draining": 1, "offline": 2}
                ids.sort(key=lambda i: order.get(ws[i].status, 3))
            elif sort == "load":
                ids.sort(key=lambda i: -ws[i].slots_used)
            return ids

        return self._cached(WORKERS, (self.versions[WORKERS], sort), make)

    def reservation_ids(self) -> list[str]:
        def make() -> list[str]:
            rs = self.reservations
            return sorted(rs, key=lambda i: (rs[i].status != "active", rs[i].expires_at or 0.0))

        return self._cached(RESERVATIONS, self.versions[RESERVATIONS], make)

    def aged(self, t: TaskView, now: float) -> float:
        """A queued task's `priority_aged` now, as the server computes it (core/aging.py)."""
        a = self.aging
        if t.status != QUEUED or a.rate <= 0 or t.created_at is None:
            return float(t.priority)
        return max(float(t.priority), min(a.cap, t.priority + a.rate * (now - t.created_at) / 3600.0))

    def summary(self) -> str:
        depth = self.depth if self.depth is not None else len(self.queue)
        active = sum(1 for w in self.workers.values() if w.status == "active")
        parts = [f"{depth} queued", f"{len(self.running)} running"]
        if self.sees_scheduler:
            parts.append(f"{active}/{len(self.workers)} workers active")
            parts.append(f"{sum(1 for r in self.reservations.values() if r.status == 'active')} reservations")
        return ", ".join(parts)
