from __future__ import annotations

import asyncio
import logging

from sqlalchemy import text

from fetchml.services.base import read
from fetchml.services.write_queue import Tx, WriteQueue
from fetchml.store.db import Database
from fetchml.store.tables import ServerMetaRow

log = logging.getLogger("fetchml.health")

PROBE_KEY = "health_probe"


class HealthService:
    def __init__(self, db: Database, writer: WriteQueue | None = None) -> None:
        self.db = db
        self.writer = writer

    async def database_ok(self, timeout: float = 2.0) -> bool:
        try:
            await asyncio.wait_for(read(self.db, lambda s: s.execute(text("SELECT 1")).scalar()), timeout)
            return True
        except Exception:
            return False

    async def storage_ok(self, timeout: float = 2.0) -> bool:
        """False while the storage is full. A read succeeds on a full disk, so once a write has
        failed for want of space, each check tries one small write: it is what clears the state
        when space returns even if no other write comes along."""
        if not self.db.storage_full:
            return True
        if self.writer is None:
            return False

        def probe(tx: Tx) -> None:
            row = tx.session.get(ServerMetaRow, PROBE_KEY)
            stamp = tx.clock.now().isoformat()
            if row is None:
                tx.session.add(ServerMetaRow(key=PROBE_KEY, value=stamp))
            else:
                row.value = stamp

        try:
            await asyncio.wait_for(self.writer.run(probe), timeout)
        except Exception:  # still full (or busy): degraded either way
            return False
        return not self.db.storage_full

    async def status(self) -> str:
        """healthy, or degraded while the database cannot be read or the storage is full."""
        if not await self.database_ok():
            return "degraded"
        return "healthy" if await self.storage_ok() else "degraded"
