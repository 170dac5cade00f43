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
    no_sidecars: bool = typer.Option(
        False,
        "--no-sidecars",
        help="Do not run the tracking plugins' sidecars (mlflow, tensorboard) here: with several "
        "servers on one database, one runs them (env FETCHML_SIDECARS=false).",
    ),
    worker_executor: str = typer.Option(
        "local", "--worker-executor", help="Executor of the embedded worker: local, docker or auto."
    ),
    worker_slots: int = typer.Option(
        None,
        "--worker-slots",
        min=1,
        help="Tasks the embedded worker runs at once (default: one per GPU, at least 1).",
    ),
    worker_run_as: str = typer.Option(
        None,
        "--worker-run-as",
        help="Run the embedded worker's tasks as this unprivileged user (server run as root; "
        "local executor). Needed, or docker, when serving beyond loopback.",
        metavar="USER",
    ),
    dataset_root: list[Path] = typer.Option(
        None,
        "--dataset-root",
        help="A folder whose files the embedded worker's tasks may name as local dataset sources "
        "(repeatable; default: FETCHML_DATASET_ROOTS, else your home folder when serving on "
        "loopback and none otherwise).",
    ),
    allow_private_datasets: bool = typer.Option(
        False,
        "--allow-private-datasets",
        help="Let the embedded worker's dataset URLs reach loopback and private addresses "
        "(env FETCHML_ALLOW_PRIVATE_DATASETS).",
    ),
    max_dataset_bytes: int = typer.Option(
        None,
        "--max-dataset-bytes",
        min=1,
        help="Largest dataset file the embedded worker fetches "
        "(env FETCHML_MAX_DATASET_BYTES; default 64 GiB).",
    ),
) -> None:
    """Run the HTTP API server with its lease sweeper and an embedded local worker.

    On a loopback host, the first start on a database with no API key makes an admin key for
    you and saves it in the client config file (unless that already holds a key), so every
    other command works at once. Beyond loopback it only says how to make one."""
    from functools import partial

    from fetchml.cli.common import fail
    from fetchml.cli.embedded import check_embedded_isolation, check_worker_run_as, start_embedded_worker
    from fetchml.cli.firstrun import ensure_local_key
    from fetchml.cli.worker_secrets import harden_process
    from fetchml.host.settings import Settings
    from fetchml.server.main import serve as run_server

    overrides = {
        k: v
        for k, v in {"host": host, "port": port, "data_dir": data_dir, "database_url": database_url}.items()
        if v is not None
    }
    if no_sidecars:
        overrides["sidecars"] = False
    settings = Settings(**overrides)  # type: ignore[arg-type]
    if not no_worker:
        # Before anything opens the database or binds: a refused server touches nothing.
        refusal = check_embedded_isolation(settings.host, worker_executor, worker_run_as)
        if refusal is not None:
            fail(refusal, 2)
        refusal = check_worker_run_as(worker_executor, worker_run_as)
        if refusal is not None:
            fail(refusal, 2)
    # Tasks of a same-user embedded worker may not read this process's memory or environment.
    harden_process()
    companion = (
        None
        if no_worker
        else partial(
            start_embedded_worker,
            executor=worker_executor,
            slots=worker_slots,
            dataset_roots=dataset_root or None,
            allow_private_datasets=allow_private_datasets or None,  # not given: the environment decides
            max_dataset_bytes=max_dataset_bytes,
            run_as=worker_run_as,
        )
    )
    run_server(settings, companion=companion, prepare=ensure_local_key)
