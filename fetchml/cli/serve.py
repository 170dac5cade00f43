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
) -> None:
    """Run the HTTP API server (and, later, the scheduler and an embedded worker)."""
    from fetchml.core.settings import Settings
    from fetchml.server.main import serve as run_server

    overrides = {
        k: v
        for k, v in {"host": host, "port": port, "data_dir": data_dir, "database_url": database_url}.items()
        if v is not None
    }
    settings = Settings(**overrides)  # type: ignore[arg-type]
    run_server(settings)
