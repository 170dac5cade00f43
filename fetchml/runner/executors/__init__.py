"""Executors: how a worker runs one attempt (docker or local process)."""
