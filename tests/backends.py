"""The databases the store-touching tests run against: SQLite files and PostgreSQL databases.

- FETCHML_TEST_BACKENDS: comma-separated subset of `sqlite,postgresql` (default: both).
- FETCHML_TEST_PG_URL: an admin URL of the PostgreSQL server; every server under test gets a
  fresh database of its own on it (`fml_<random>`), dropped when its fixture ends (and, as a
  backstop, at the end of the session).

A PostgreSQL test skips when the server cannot be reached, except under CI=true, where it fails
(`.ci/postgres.sh` installs and starts PostgreSQL there).
"""

from __future__ import annotations

import contextlib
import functools
import os
import threading
import uuid
from typing import Any, NoReturn

import pytest
from sqlalchemy.engine import URL, make_url

SQLITE = "sqlite"
POSTGRESQL = "postgresql"
ALL_BACKENDS = (SQLITE, POSTGRESQL)
BACKENDS_ENV = "FETCHML_TEST_BACKENDS"
PG_URL_ENV = "FETCHML_TEST_PG_URL"
DEFAULT_PG_URL = "postgresql+psycopg://postgres:postgres@127.0.0.1:5432/postgres"
DB_PREFIX = "fml_"


def selected_backends() -> list[str]:
    raw = os.environ.get(BACKENDS_ENV, "")
    names = [b.strip().lower() for b in raw.split(",") if b.strip()] or list(ALL_BACKENDS)
    unknown = sorted(set(names) - set(ALL_BACKENDS))
    if unknown:
        raise pytest.UsageError(f"{BACKENDS_ENV}: unknown backend(s) {unknown}; choose from {ALL_BACKENDS}")
    if in_ci() and set(names) != set(ALL_BACKENDS):
        # Leaving a backend out would drop its tests silently (they are never even collected).
        raise pytest.UsageError(f"{BACKENDS_ENV}={raw!r}: CI runs every backend; unset it under CI")
    return [b for b in ALL_BACKENDS if b in names]


def pg_admin_url() -> URL:
    return make_url(os.environ.get(PG_URL_ENV) or DEFAULT_PG_URL)


def _conninfo(url: URL) -> str:
    """A libpq URI for psycopg itself (SQLAlchemy's `+psycopg` driver suffix removed)."""
    return url.set(drivername="postgresql").render_as_string(hide_password=False)


def _connect(url: URL, **kw: Any) -> Any:
    import psycopg

    return psycopg.connect(_conninfo(url), connect_timeout=5, **kw)


@functools.cache
def pg_unavailable_reason() -> str | None:
    """None when the admin URL answers; otherwise why not (checked once per session)."""
    url = pg_admin_url()
    try:
        with _connect(url, autocommit=True) as conn:
            conn.execute("SELECT 1")
    except Exception as exc:
        where = url.render_as_string(hide_password=True)
        return f"PostgreSQL at {where} is not reachable ({type(exc).__name__}: {exc}); run .ci/postgres.sh"
    return None


def in_ci() -> bool:
    """Whether this is a CI run: any non-empty CI other than 0/false (CI systems spell it
    differently), where a missing service is a failure, never a skip."""
    return os.environ.get("CI", "").strip().lower() not in ("", "0", "false")


def skip_or_fail(reason: str) -> NoReturn:
    """Skip on a laptop without the service; fail under CI, where the suite must run whole."""
    if in_ci():
        pytest.fail(f"required in CI: {reason}", pytrace=False)
    pytest.skip(reason)


def require_backend(backend: str) -> None:
    """Skip (fail under CI=true) when the backend cannot be used here."""
    if backend != POSTGRESQL:
        return
    reason = pg_unavailable_reason()
    if reason is None:
        return
    skip_or_fail(f"PostgreSQL: {reason}")


_created: set[str] = set()
_created_lock = threading.Lock()


def create_database() -> str:
    """A new, empty database on the test PostgreSQL server; returns its SQLAlchemy URL."""
    name = f"{DB_PREFIX}{uuid.uuid4().hex[:16]}"
    with _connect(pg_admin_url(), autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    with _created_lock:
        _created.add(name)
    return pg_admin_url().set(database=name).render_as_string(hide_password=False)


def drop_database(url: str) -> None:
    """Drops a database made by create_database, disconnecting whoever is still on it."""
    name = make_url(url).database or ""
    if not name.startswith(DB_PREFIX):
        raise ValueError(f"refusing to drop {name!r}: not a test database")
    with _connect(pg_admin_url(), autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    with _created_lock:
        _created.discard(name)


def drop_all_created() -> None:
    """Session-end backstop: drop every database this process made and has not dropped yet."""
    with _created_lock:
        names = sorted(_created)
    for name in names:
        # A cleanup must not turn a passing session into a failing one.
        with contextlib.suppress(Exception):
            drop_database(pg_admin_url().set(database=name).render_as_string(hide_password=False))


def _placeholders_to_pyformat(sql: str) -> str:
    """`?` placeholders (sqlite3) to `%s` (psycopg); literal `%` doubled; quoted text untouched."""
    out: list[str] = []
    quote: str | None = None
    for ch in sql:
        if quote is not None:
            out.append("%%" if ch == "%" else ch)
            if ch == quote:
                quote = None
        elif ch in ("'", '"'):
            quote = ch
            out.append(ch)
        elif ch == "?":
            out.append("%s")
        elif ch == "%":
            out.append("%%")
        else:
            out.append(ch)
    return "".join(out)


def pg_exec(url: str, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Runs one statement with `?` placeholders and commits. JSON columns come back as their
    text (as sqlite3 gives them); timestamps as naive datetimes (UTC, as stored)."""
    from psycopg.types.string import TextLoader

    with _connect(make_url(url)) as conn:
        for json_type in ("json", "jsonb"):
            conn.adapters.register_loader(json_type, TextLoader)
        # Without parameters psycopg takes the text as it is (no placeholder parsing at all).
        cur = conn.execute(_placeholders_to_pyformat(sql), params) if params else conn.execute(sql)
        rows = [tuple(r) for r in cur.fetchall()] if cur.description is not None else []
        conn.commit()
        return rows
