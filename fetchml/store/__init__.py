"""Persistence: SQLModel tables, engine/session setup, migrations."""
