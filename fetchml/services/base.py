from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import TypeVar

from sqlalchemy.orm import Session

from fetchml.store.db import Database

T = TypeVar("T")


async def read(db: Database, fn: Callable[[Session], T]) -> T:
    """Run a read in a worker thread: sync DB sessions never block the event loop."""

    def call() -> T:
        with db.read() as session:
            return fn(session)

    return await asyncio.to_thread(call)
