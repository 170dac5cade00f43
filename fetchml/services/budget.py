"""Byte budgets for list responses.

A page of `limit` rows is picked in two steps: first the keys of the page with an estimate of
each row's size, computed by the database (nothing big is loaded into Python); then only the
rows that fit the budget are loaded whole. A client asking for 1000 rows of big tasks gets fewer
rows, `total` stays the count of all matches, and it pages on with `offset + len(items)`.
"""

from __future__ import annotations

import asyncio
import contextlib
import weakref
from collections.abc import AsyncIterator, Iterable
from typing import Any, TypeVar

from sqlalchemy import ColumnElement, Integer, Text, cast, func, literal

# What a row costs on the wire beyond its big columns: ids, timestamps, small fields, keys.
ROW_OVERHEAD = 1024
DEFAULT_LIST_BYTES = 4 * 1024 * 1024
# Pages of more rows than this are built one at a time (per event loop, see big_page).
BIG_PAGE_ROWS = 100
K = TypeVar("K")
_big_pages: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, asyncio.Semaphore] = (
    weakref.WeakKeyDictionary()
)


def size_of(*text_columns: Any, json_columns: Iterable[Any] = ()) -> ColumnElement[int]:
    """SQL estimate of a row's serialized size: the lengths of its variable-size columns."""
    parts: list[ColumnElement[Any]] = [literal(ROW_OVERHEAD, Integer)]
    parts += [func.coalesce(func.length(c), 0) for c in text_columns]
    parts += [func.coalesce(func.length(cast(c, Text)), 0) for c in json_columns]
    total = parts[0]
    for part in parts[1:]:
        total = total + part
    return total


def within_budget(sized: Iterable[tuple[K, int | None]], budget: int) -> list[K]:
    """Keys of the leading (key, size) rows whose sizes add up to at most `budget`; the first
    row always, so that a single row bigger than the budget can still be read."""
    keys: list[K] = []
    spent = 0
    for key, size in sized:
        spent += int(size or 0)
        if keys and spent > budget:
            break
        keys.append(key)
    return keys


@contextlib.asynccontextmanager
async def big_page(rows: int) -> AsyncIterator[None]:
    """Hold around building a page of `rows` rows: pages of more than BIG_PAGE_ROWS take turns.

    A page of 1000 tasks is some 10 MB of Python objects while it is built; the GIL runs one
    builder at a time anyway, so building them in turn costs no throughput, and the server's
    memory stays bounded however many clients ask for big pages at once."""
    if rows <= BIG_PAGE_ROWS:
        yield
        return
    loop = asyncio.get_running_loop()
    gate = _big_pages.get(loop)
    if gate is None:
        gate = _big_pages[loop] = asyncio.Semaphore(1)
    async with gate:
        yield
