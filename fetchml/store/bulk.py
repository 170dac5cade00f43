"""Plain INSERTs of many rows at the driver's own executemany.

SQLAlchemy's Core executemany costs more Python per row than SQLite takes to store it (cache
key, parameter dicts, per-value processing through its execution context); on the submission
path that was two fifths of the writer. Here the statement text and each column's bind
processor are worked out once per (dialect, table, columns), and a row becomes a plain tuple.
The values still pass through the same processors SQLAlchemy would apply, so what is stored is
the same. Anything this cannot do exactly (a column with a Python-side default left out, a
driver paramstyle it does not know) goes through SQLAlchemy as before.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from functools import lru_cache
from itertools import groupby
from typing import Any, NamedTuple

from sqlalchemy import JSON, Connection, Table
from sqlalchemy.engine import Dialect

_PLACEHOLDER = {"qmark": "?", "format": "%s", "pyformat": "%s"}


class _Plan(NamedTuple):
    sql: str
    # (position, processor) for the columns whose values need converting (JSON, datetimes).
    convert: tuple[tuple[int, Callable[[Any], Any]], ...]


def insert_rows(conn: Connection, table: Table, rows: Iterable[dict[str, Any]]) -> None:
    """INSERT `rows` (dicts keyed by column key) into `table` on `conn`, one executemany per
    run of rows that name the same columns."""
    dialect = conn.dialect
    keys: tuple[str, ...]
    for keys, run in groupby(rows, key=_columns):
        group = list(run)
        plan = _plan(dialect, table, keys)
        if plan is None:
            conn.execute(table.insert(), group)
            continue
        params = [tuple(row.values()) for row in group]
        if plan.convert:
            params = [_converted(values, plan.convert) for values in params]
        conn.exec_driver_sql(plan.sql, params if len(params) > 1 else params[0])


def _columns(row: dict[str, Any]) -> tuple[str, ...]:
    return tuple(row)


def _converted(
    values: tuple[Any, ...], convert: tuple[tuple[int, Callable[[Any], Any]], ...]
) -> tuple[Any, ...]:
    out = list(values)
    for i, proc in convert:
        out[i] = proc(out[i])
    return tuple(out)


@lru_cache(maxsize=256)
def _plan(dialect: Dialect, table: Table, keys: tuple[str, ...]) -> _Plan | None:
    mark = _PLACEHOLDER.get(dialect.paramstyle)
    if mark is None or not keys:
        return None
    named = set(keys)
    if any(c.key not in named and c.default is not None for c in table.columns):
        return None  # SQLAlchemy would fill that default in; let it
    columns = [table.columns[k] for k in keys]
    quote = dialect.identifier_preparer
    sql = (
        f"INSERT INTO {quote.format_table(table)} ({', '.join(quote.format_column(c) for c in columns)}) "
        f"VALUES ({', '.join(mark for _ in columns)})"
    )
    convert: list[tuple[int, Callable[[Any], Any]]] = []
    for i, column in enumerate(columns):
        proc = column.type._cached_bind_processor(dialect)
        if proc is not None:
            convert.append((i, _empty_once(proc) if isinstance(column.type, JSON) else proc))
    return _Plan(sql, tuple(convert))


def _empty_once(proc: Callable[[Any], Any]) -> Callable[[Any], Any]:
    """A JSON column's processor that encodes an empty list or dict once, not per row: a new
    task has half a dozen of them, and json.dumps costs microseconds even for `[]`."""
    empty_list, empty_dict = proc([]), proc({})

    def convert(value: Any) -> Any:
        if not value and type(value) is list:
            return empty_list
        if not value and type(value) is dict:
            return empty_dict
        return proc(value)

    return convert
