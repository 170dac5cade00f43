from __future__ import annotations

import asyncio

from sqlalchemy import text

from fetchml.services.base import read
from fetchml.store.db import Database


class HealthService:
    def __init__(self, db: Database) -> None:
        self.db = db

    async def database_ok(self, timeout: float = 2.0) -> bool:
        try:
            await asyncio.wait_for(read(self.db, lambda s: s.execute(text("SELECT 1")).scalar()), timeout)
            return True
        except Exception:
            return False
