"""`fetchml worker`: run tasks from a server on this machine."""

from __future__ import annotations

import socket
from pathlib import Path

import typer

from fetchml.cli.common import ApiKeyOpt, ServerOpt, fail


def worker(
    server: str | None = ServerOpt,
    api_key: str | None = ApiKeyOpt,
    name: str = typer.Option(None, "--name", help="Worker name, unique per server (default: the host name)."),
    executor: str = typer.Option(
        "auto", "--executor", help="auto (docker when a daemon answers, else local), docker or local."
    ),
    batch_slots: int = typer.Option(
        None, "--batch-slots", min=1, help="Tasks run at once (default: one per GPU, at least 1)."
    ),
    gpus: int = typer.Option(
        None, "--gpus", min=0, help="Override NVML detection: this many GPUs (like Slurm's gres.conf)."
    ),
    gpu_type: str = typer.Option(None, "--gpu-type", help="GPU model name reported with --gpus (e.g. A100)."),
    default_image: str = typer.Option(None, "--default-image", help="Docker image for tasks that name none."),
    work_dir: Path = typer.Option(
        None, "--work-dir", help="Caches and workspaces (default: <user cache dir>/fetchml/worker-NAME)."
    ),
    stop_grace: float = typer.Option(
        10.0, "--stop-grace", help="Seconds between SIGTERM and SIGKILL when a task is cancelled."
    ),
    log_level: str = typer.Option("info", "--log-level", help="debug, info, warning or error."),
) -> None:
    """Register with a server and run its tasks in local Docker (or as local processes)."""
    import logging
    import signal

    import platformdirs

    from fetchml.client import FetchmlClient, resolve
    from fetchml.core.errors import FetchmlError
    from fetchml.runner.executors.base import ExecutorError
    from fetchml.runner.worker import Worker, WorkerConfig

    logging.basicConfig(level=log_level.upper(), format="%(asctime)s %(levelname)s %(name)s %(message)s")
    if gpu_type is not None and gpus is None:
        fail("--gpu-type needs --gpus", 2)
    worker_name = name or socket.gethostname().split(".")[0]
    cfg = WorkerConfig(
        name=worker_name,
        work_dir=work_dir
        or Path(platformdirs.user_cache_dir("fetchml", appauthor=False)) / f"worker-{worker_name}",
        executor=executor,
        batch_slots=batch_slots,
        gpus=gpus,
        gpu_type=gpu_type,
        default_image=default_image,
        stop_grace=stop_grace,
    )
    config = resolve(server, api_key)
    client = FetchmlClient(config.server_url, config.api_key, timeout=config.timeout)
    try:
        w = Worker(cfg, client)
    except (ExecutorError, ValueError) as exc:
        fail(str(exc), 2)
        return
    signal.signal(signal.SIGTERM, lambda *_: w.stop())
    signal.signal(signal.SIGINT, lambda *_: w.stop())
    try:
        w.run()
    except FetchmlError as exc:
        fail(f"{exc.code}: {exc.message}")
    finally:
        client.close()
