"""The decision order: aged priority descending, then submission order (``seq``, FIFO).

`order_key` is the order as a sort key (for callers and tests); `ordered` yields the queue in
that order lazily, without sorting it when it arrives in one of the orders the SQL produces:
aging (``fetchml.core.aging``) keeps the relative order of tasks of equal priority (it is
monotone in the wait), so each priority's tasks are already in submission order and a heap
merges the priorities as the walk takes them.

Pure: ``now`` is passed in.
"""

from __future__ import annotations

import heapq
from array import array
from bisect import bisect_right
from collections.abc import Iterator, Sequence
from itertools import islice
from operator import attrgetter, ge, le, lt, neg

from fetchml.core.aging import aged_priority, hours_waited
from fetchml.core.scheduling.types import TaskReq

__all__ = ["order_key", "ordered"]

_SEQ = attrgetter("seq")
_PRIO = attrgetter("priority")
_CREATED = attrgetter("created_at")


def order_key(task: TaskReq, *, now: float, aging_rate: float, aging_cap: float) -> tuple[float, int]:
    """The sort key of the decision order: (-aged priority, seq). Smaller runs first."""
    aged = aged_priority(task.priority, hours_waited(task.created_at, now), aging_rate, aging_cap)
    return (-aged, task.seq)


def ordered(queue: Sequence[TaskReq], now: float, rate: float, cap: float) -> Iterator[tuple[float, int]]:
    """Yields (aged priority, queue index) in decision order, lazily: cost is paid per task taken.

    Works on columns extracted in queue order (touching 100k objects out of memory order costs
    several times more than in order). Fast paths, both with no sort at all:

    - queue in seq order (``ORDER BY seq``) with created_at non-decreasing: each priority's
      tasks are found with ``bytes.index`` (memchr) as the merge needs them;
    - queue grouped by priority (desc) with seq ascending and created_at non-decreasing inside
      each group (``ORDER BY priority DESC, seq``): each group is a contiguous range.

    Either way each priority's tasks are in (-aged, seq) order, because aging is monotone in
    the wait; a heap merges the group heads. Anything else is sorted exactly (slower).

    While the walk runs only untracked containers stay alive (priorities as ``bytes``; seq and
    created_at are read from the few tasks walked): a 100k-element list still in the young
    generation makes the collection that the walk's allocations trigger cost ~3 ms per list.
    """
    n = len(queue)
    if not n:
        return
    aging = rate > 0.0
    prios: bytes | list[int]
    try:
        prios = bytes(map(_PRIO, queue))  # priorities are 1..10
    except (ValueError, TypeError):
        prios = list(map(_PRIO, queue))
    seq_list = list(map(_SEQ, queue))
    created_list = list(map(_CREATED, queue)) if aging else []
    heads: list[tuple[float, int, int, int]] = []  # (-aged, seq, group, first index)
    ends: list[int] = []  # per group: -1 = "find the next index of that priority", else range end
    if all(map(lt, seq_list, islice(seq_list, 1, None))):
        if not aging or all(map(le, created_list, islice(created_list, 1, None))):
            for p in sorted(set(prios)):
                heads.append((0.0, 0, len(ends), prios.index(p)))
                ends.append(-1)
    elif all(map(ge, prios, islice(prios, 1, None))):
        start = 0
        while start < n:
            end = bisect_right(prios, -prios[start], start, n, key=neg)
            sq, cr = seq_list[start:end], created_list[start:end]
            if not all(map(lt, sq, islice(sq, 1, None))) or (
                aging and not all(map(le, cr, islice(cr, 1, None)))
            ):
                heads, ends = [], []
                break
            heads.append((0.0, 0, len(ends), start))
            ends.append(end)
            start = end

    def aged(i: int) -> float:
        return aged_priority(prios[i], hours_waited(queue[i].created_at, now) if aging else 0.0, rate, cap)

    if not ends:
        # Exact sort: by seq, then (stable) by aged priority descending.
        order = array("q", sorted(range(n), key=seq_list.__getitem__))
        del seq_list, created_list
        neg_aged = array("d", [-aged(i) for i in range(n)])
        order = array("q", sorted(order, key=neg_aged.__getitem__))
        for i in order:
            yield -neg_aged[i], i
        return
    # Only untracked containers stay alive from here on: see the docstring.
    del seq_list, created_list
    heads = [(-aged(i), queue[i].seq, gi, i) for _, _, gi, i in heads]
    heapq.heapify(heads)
    index = prios.index
    while heads:
        neg_aged_i, _, gi, i = heads[0]
        yield -neg_aged_i, i
        end = ends[gi]
        if end < 0:
            try:
                i = index(prios[i], i + 1)
            except ValueError:
                i = -1
        else:
            i = i + 1 if i + 1 < end else -1
        if i < 0:
            heapq.heappop(heads)
        else:
            heapq.heapreplace(heads, (-aged(i), queue[i].seq, gi, i))
