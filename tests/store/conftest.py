"""An empty database per test on every backend under test (tests/backends.py)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from fetchml.store.db import Database
from tests.backends import POSTGRESQL, create_database, drop_database


@pytest.fixture
def db_url(backend: str, tmp_path: Path) -> Iterator[str]:
    if backend == POSTGRESQL:
        url = create_database()
        yield url
        drop_database(url)
    else:
        yield f"sqlite:///{tmp_path / 'm.db'}"


@pytest.fixture
def db(db_url: str) -> Iterator[Database]:
    """Not migrated: a test that needs the schema migrates it."""
    database = Database(db_url)
    yield database
    database.dispose()
