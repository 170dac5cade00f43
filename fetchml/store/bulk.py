"""The writer's plain statements: INSERTs of many rows at the driver's own executemany, and the
few small queries it runs per transaction.

SQLAlchemy's Core executemany costs more Python per row than SQLite takes to store it (cache
key, parameter dicts, per-value processing through its execution context); on the submission
path that was two fifths of the writer. Here the statement text and each column's bind
processor are worked out once per (dialect, table, columns), and a row becomes a plain tuple.
The values still pass through the same processors SQLAlchemy would apply, so what is stored is
the same. Anything this cannot do exactly (a column with a Python-side default left out, a
driver paramstyle it does not know) goes through SQLAlchemy as before.

On SQLite (pysqlite) the statements run on the driver's own cursor: SQLAlchemy's execution
context around each statement (events, result set-up) cost the writer more than SQLite took to
run a small batch, and a write transaction runs several. A driver error still goes through
SQLAlchemy's handling, so callers see the same exceptions and the engine's hooks still run.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from functools import lru_cache
from itertools import groupby
from typing import Any, NamedTuple

from sqlalchemy import JSON, Connection, Table
from sqlalchemy.engine import Dialect

from fetchml.store.types import UTCDateTime

_PLACEHOLDER = {"qmark": "?", "format": "%s", "pyformat": "%s"}


class _Plan(NamedTuple):
    sql: str
    # (position, processor) for the columns whose values need converting (JSON, datetimes).
    convert: tuple[tuple[int, Callable[[Any], Any]], ...]


def insert_rows(
    conn: Connection, table: Table, rows: Iterable[dict[str, Any]], keymap: dict[str, str] | None = None
) -> None:
    """INSERT `rows` (dicts keyed by column key, or by the keys `keymap` maps to column keys)
    into `table` on `conn`, one executemany per run of rows that name the same columns."""
    dialect = conn.dialect
    keys: tuple[str, ...]
    for keys, run in groupby(rows, key=_columns):
        group = list(run)
        # Mapped once per run, not per row: a task row has three dozen columns.
        columns = keys if keymap is None else tuple(keymap[k] for k in keys)
        plan = _plan(dialect, table, columns)
        if plan is None:
            if keymap is not None:
                group = [dict(zip(columns, row.values(), strict=True)) for row in group]
            conn.execute(table.insert(), group)
            continue
        if plan.convert:
            params = [_converted(tuple(row.values()), plan.convert) for row in group]
        else:
            params = [tuple(row.values()) for row in group]
        execute_many(conn, plan.sql, params)


def is_raw(conn: Connection) -> bool:
    """Whether `conn` runs statements on the driver's cursor here (pysqlite)."""
    return conn.dialect.name == "sqlite" and conn.dialect.driver == "pysqlite"


def fetch_rows(conn: Connection, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """A small query's rows as plain tuples; positional parameters use `placeholder(conn)`.
    Through SQLAlchemy, the result machinery of a one-row SELECT cost more than SQLite took to
    run it."""
    if not is_raw(conn):
        return [tuple(r) for r in conn.exec_driver_sql(sql, params)]
    with _driver_cursor(conn, sql, params) as cursor:
        cursor.execute(sql, params)
        rows: list[tuple[Any, ...]] = cursor.fetchall()
    return rows


def execute_many(conn: Connection, sql: str, params: list[tuple[Any, ...]]) -> None:
    """One statement over many parameter tuples, on the driver's cursor where it can."""
    if is_raw(conn):
        _raw_executemany(conn, sql, params)
    else:
        conn.exec_driver_sql(sql, params if len(params) > 1 else params[0])


def execute_plain(conn: Connection, sql: str) -> None:
    """One statement without parameters or rows (BEGIN), on the driver's cursor where it can:
    every write transaction begins with one, and through SQLAlchemy's execution it cost about
    a third of an empty transaction's time."""
    if not is_raw(conn):
        conn.exec_driver_sql(sql)
        return
    with _driver_cursor(conn, sql, ()) as cursor:
        cursor.execute(sql)


def placeholder(conn: Connection) -> str:
    """The driver's positional placeholder (`?` for SQLite, `%s` for psycopg)."""
    return _PLACEHOLDER.get(conn.dialect.paramstyle, "?")


def _raw_executemany(conn: Connection, sql: str, params: list[tuple[Any, ...]]) -> None:
    with _driver_cursor(conn, sql, params) as cursor:
        if len(params) == 1:
            cursor.execute(sql, params[0])
        else:
            cursor.executemany(sql, params)


@contextmanager
def _driver_cursor(conn: Connection, sql: str, params: Any) -> Iterator[Any]:
    """The driver's own cursor on `conn`, without SQLAlchemy's execution context around it. A
    driver error still goes through SQLAlchemy's error handling (the engine's handle_error hook,
    which marks a full disk, and the pool's disconnect handling), as if it had run `sql` itself."""
    cursor = conn.connection.driver_connection.cursor()  # type: ignore[union-attr]
    try:
        yield cursor
    except Exception as exc:
        # Private, but the one place that does all of the above; tests/fault covers the path
        # (a full disk under submissions answers 507 and marks the database full).
        conn._handle_dbapi_exception(exc, sql, params, cursor, None)
    finally:
        cursor.close()


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
        base = column.type._cached_bind_processor(dialect)
        if base is None:
            continue
        proc: Callable[[Any], Any] = base
        if isinstance(column.type, JSON):
            proc = _empty_once(base)
        elif isinstance(column.type, UTCDateTime) and dialect.name == "sqlite":
            proc = _sqlite_datetime(base)
        convert.append((i, proc))
    return _Plan(sql, tuple(convert))


def _sqlite_datetime(proc: Callable[[Any], Any]) -> Callable[[Any], Any]:
    """UTCDateTime on SQLite in one step: naive UTC as SQLAlchemy's DATETIME stores it
    (`YYYY-MM-DD HH:MM:SS.ffffff`), without the two processors' calls and `%` formatting
    (every row has a timestamp or two). Anything but an aware or naive datetime, or a storage
    format that differs from that, goes through SQLAlchemy's processor."""
    probes = (datetime(2026, 1, 2, 3, 4, 5, 6, tzinfo=UTC), datetime(999, 12, 31, 23, 59, 59))
    if any(proc(p) != _iso_utc(p) for p in probes) or proc(None) is not None:
        return proc

    def convert(value: Any) -> Any:
        if value is None:  # most of a new task's timestamps (started, ended, lease)
            return None
        return _iso_utc(value) if type(value) is datetime else proc(value)

    return convert


def _iso_utc(value: datetime) -> str:
    if value.tzinfo is UTC:
        value = value.replace(tzinfo=None)
    elif value.tzinfo is not None:
        value = value.astimezone(UTC).replace(tzinfo=None)
    return value.isoformat(" ", "microseconds")


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
