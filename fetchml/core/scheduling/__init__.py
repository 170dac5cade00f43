"""The scheduling decision: queued tasks + free capacity -> placements and pending reasons.

Pure and deterministic: no I/O, no clock (``now`` is passed in), no randomness. The policy is
written down in docs/scheduling.md; in short:

- Order: aged priority descending (``fetchml.core.aging.aged_priority``), then ``seq`` (FIFO).
- Each task in that order is placed if it fits the capacity left by the tasks before it; a
  lower task may backfill capacity a higher, blocked task cannot use (no strict head-of-line
  blocking), except:
- Anti-starvation: the highest-ordered *gang* (node_count > 1) that does not fit gets a shadow
  hold on the best candidate workers; tasks after it cannot use that held capacity, unless
  (backfill) they carry a time limit that ends by the gang's *shadow start*, the time its
  capacity is expected to be free (from the running tasks' time limits, ``WorkerFree.releases``;
  ``fetchml.core.scheduling.shadow``).
- A promise is kept: the owner of the previous decision's shadow (``promise``) gets its hold
  before the walk, against every task ahead of it too, while it stays queued and blocked
  (``fetchml.core.scheduling.shadow``).
- Reservations withhold their GPUs from every task but their owner's tasks carrying their id.
- A gang is placed whole, on distinct workers, or not at all.

Performance notes (the budget is 100 ms for 100,000 queued tasks on a small machine; see
docs/scheduling.md for figures): every step over the whole queue runs as C-level ``map``,
``bytes.index`` or ``sorted`` calls; only the head of the queue (until nothing more can fit
anywhere) is walked in Python. That rests on two facts:

- Aging keeps the relative order of tasks of equal priority (it is monotone in the wait), so
  each priority's tasks are already in submission order and a heap merges the priorities
  lazily: no sort of the queue.
- Capacity only shrinks during a decision, so once a resource *shape* (cpu, memory, gpus, type,
  nodes, reservation) fails to fit, every later task of that shape fails too: the answer and
  its pending reason are memoised per shape, and the walk stops when every shape has failed.
  (So the cost also grows with the number of distinct shapes: ~2,000 of them in 100k tasks
  still decide in well under 100 ms; 16,000 take about half a second.)

Layout (every name callers use is re-exported here):

- ``types``: the inputs and outputs (`TaskReq`, `WorkerFree`, `ReservationHold`, `Release`,
  `Promise`, `Decision`, `Placement`, `Shadow`), ``shape_key`` and the ``REASON_*`` prefixes;
- ``order``: the decision order (aged priority, then seq) without sorting the queue;
- ``cluster``: the free capacity during one decision (search, take, snapshots);
- ``explain``: the pending-reason text;
- ``shadow``: the anti-starvation shadow, backfill onto it, and the kept promise;
- ``decision``: `decide` itself, the walk that ties them together.
"""

from __future__ import annotations

from fetchml.core.scheduling.decision import decide
from fetchml.core.scheduling.order import order_key
from fetchml.core.scheduling.types import (
    REASON_NEVER,
    REASON_NO_WORKERS,
    REASON_PRIORITY,
    REASON_PROMISED,
    REASON_RESERVATION,
    REASON_SHADOW,
    Decision,
    NodePlacement,
    Placement,
    Promise,
    Release,
    ReservationHold,
    Shadow,
    ShadowNode,
    TaskReq,
    WorkerFree,
    shape_key,
)

__all__ = [
    "REASON_NEVER",
    "REASON_NO_WORKERS",
    "REASON_PRIORITY",
    "REASON_PROMISED",
    "REASON_RESERVATION",
    "REASON_SHADOW",
    "Decision",
    "NodePlacement",
    "Placement",
    "Promise",
    "Release",
    "ReservationHold",
    "Shadow",
    "ShadowNode",
    "TaskReq",
    "WorkerFree",
    "decide",
    "order_key",
    "shape_key",
]
