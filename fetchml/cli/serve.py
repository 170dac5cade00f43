"""`fetchml serve`: the API server, the lease sweeper and (unless --no-worker) one local worker."""

from __future__ import annotations

from pathlib import Path

import typer


def serve(
    host: str = typer.Option(None, "--host", help="Interface to bind (default 127.0.0.1; env FETCHML_HOST)."),
    port: int = typer.Option(None, "--port", help="TCP port (default 9101; env FETCHML_PORT)."),
    data_dir: Path = typer.Option(
        None, "--data-dir", help="Database and server files (env FETCHML_DATA_DIR)."
    ),
    database_url: str = typer.Option(
        None, "--database-url", help="SQLAlchemy URL (env FETCHML_DATABASE_URL)."
    ),
    no_worker: bool = typer.Option(False, "--no-worker", help="Do not start the embedded local worker."),
    worker_executor: str = typer.Option(
        "local", "--worker-executor", help="Executor of the embedded worker: local, docker or auto."
    ),
    worker_slots: int = typer.Option(
        None,
        "--worker-slots",
        min=1,
        help="Tasks the embedded worker runs at once (default: one per GPU, at least 1).",
    ),
) -> None:
    """Run the HTTP API server with its lease sweeper and an embedded local worker."""
    from functools import partial

    from fetchml.cli.embedded import start_embedded_worker
    from fetchml.core.settings import Settings
    from fetchml.server.main import serve as run_server

    overrides = {
        k: v
        for k, v in {"host": host, "port": port, "data_dir": data_dir, "database_url": database_url}.items()
        if v is not None
    }
    settings = Settings(**overrides)  # type: ignore[arg-type]
    companion = (
        None if no_worker else partial(start_embedded_worker, executor=worker_executor, slots=worker_slots)
    )
    run_server(settings, companion=companion)
