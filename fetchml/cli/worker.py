"""`fetchml worker`: run tasks from a server on this machine."""

from __future__ import annotations

import socket
from pathlib import Path

import typer

from fetchml.cli.common import ServerOpt, fail


def worker(
    server: str | None = ServerOpt,
    api_key: str | None = typer.Option(
        None, "--api-key", hidden=True, help="Refused: use FETCHML_API_KEY or --api-key-file."
    ),
    api_key_file: Path = typer.Option(
        None,
        "--api-key-file",
        help="File holding the worker key, readable by its owner only (chmod 600). "
        "Else FETCHML_API_KEY, else the config file's api_key. Never on the command line.",
        metavar="PATH",
    ),
    run_as: str = typer.Option(
        None,
        "--run-as",
        help="Local executor, worker running as root: run tasks as this unprivileged user.",
        metavar="USER",
    ),
    pass_env: list[str] = typer.Option(
        [],
        "--pass-env",
        help="Local executor: also hand this variable of the worker's environment to tasks (repeatable).",
        metavar="NAME",
    ),
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
        10.0,
        "--stop-grace",
        min=0,
        help="Seconds between SIGTERM and SIGKILL when a task is stopped; also how long running "
        "tasks may go on finishing when the worker gets SIGTERM/SIGINT before they are stopped and "
        "requeued (a second signal ends that grace at once).",
    ),
    running_report_window: float = typer.Option(
        0.01,
        "--running-report-window",
        min=0,
        help="Local executor: seconds a task's process may take to end before its running report "
        "is sent. One that ends sooner is reported once, by its end (one request fewer for the "
        "shortest tasks; a longer task shows running this much later). 0 reports running at once.",
        metavar="SECONDS",
    ),
    connect_timeout: float = typer.Option(
        None,
        "--connect-timeout",
        min=0,
        help="Give up when the server cannot be reached for this many seconds at start "
        "(default: keep retrying, backing off up to 30 s).",
    ),
    pids_limit: int = typer.Option(
        4096,
        "--pids-limit",
        min=0,
        help="Docker: most processes and threads per task container (0: no limit).",
    ),
    default_memory_gb: float = typer.Option(
        None,
        "--default-memory-gb",
        min=0,
        help="Docker: memory limit (GiB) for tasks that ask for none "
        "(default: 90% of this host's memory divided by the batch slots; 0: no limit).",
    ),
    default_cpus: float = typer.Option(
        None,
        "--default-cpus",
        min=0,
        help="Docker: CPUs for tasks that ask for none "
        "(default: this host's CPUs divided by the batch slots; 0: no limit).",
    ),
    network: str = typer.Option(
        "bridge",
        "--network",
        help="Docker: task containers' network: bridge, none, host or a Docker network name.",
    ),
    dataset_root: list[Path] = typer.Option(
        None,
        "--dataset-root",
        envvar="FETCHML_DATASET_ROOTS",
        help="A folder whose files tasks may name as local dataset sources (repeatable; env: "
        "folders separated by the OS path separator). Default: none, so no local sources at all.",
    ),
    allow_private_datasets: bool = typer.Option(
        False,
        "--allow-private-datasets",
        envvar="FETCHML_ALLOW_PRIVATE_DATASETS",
        help="Let dataset URLs reach loopback, private, link-local and other non-public addresses.",
    ),
    max_dataset_bytes: int = typer.Option(
        None,
        "--max-dataset-bytes",
        envvar="FETCHML_MAX_DATASET_BYTES",
        min=1,
        help="Largest dataset file fetched, in bytes (default: 64 GiB).",
    ),
    service_slots: int = typer.Option(
        1, "--service-slots", min=0, help="Jupyter services run at once (0: none)."
    ),
    service_ports: str = typer.Option(
        "8900-8999", "--service-ports", help="Host ports Jupyter services take, FIRST-LAST.", metavar="RANGE"
    ),
    service_host: str = typer.Option(
        "127.0.0.1", "--service-host", help="This machine's address in Jupyter services' URLs."
    ),
    service_bind: str = typer.Option(
        "127.0.0.1",
        "--service-bind",
        help="Address Jupyter services listen on (docker: where their port is published).",
    ),
    log_level: str = typer.Option("info", "--log-level", help="debug, info, warning or error."),
    phase_log: Path = typer.Option(
        None,
        "--phase-log",
        help="Append one JSON line per attempt to this file: milliseconds spent claiming, "
        "preparing, spawning, reporting, running, shipping logs and collecting outputs.",
        metavar="PATH",
    ),
) -> None:
    """Register with a server and run its tasks in local Docker (or as local processes)."""
    import logging
    import signal

    import platformdirs

    from fetchml.cli.worker_secrets import ARGV_REFUSED, WorkerKeyError, harden_process, worker_key
    from fetchml.client import FetchmlClient, resolve
    from fetchml.core.errors import FetchmlError
    from fetchml.runner.datasets import DEFAULT_MAX_DATASET_BYTES
    from fetchml.runner.executors.base import ExecutorError
    from fetchml.runner.jupyter import parse_port_range
    from fetchml.runner.worker import Worker, WorkerConfig

    if api_key is not None:
        fail(ARGV_REFUSED, 2)
    try:
        key = worker_key(api_key_file)  # may execute this command again, without the key in its env
    except WorkerKeyError as exc:
        fail(str(exc), 2)
    harden_process()
    logging.basicConfig(level=log_level.upper(), format="%(asctime)s %(levelname)s %(name)s %(message)s")
    if logging.getLogger().getEffectiveLevel() > logging.DEBUG:
        # httpx logs every request at info: several lines per task (claim, reports, heartbeats)
        # that say nothing the worker's own lines do not. Shown at debug.
        logging.getLogger("httpx").setLevel(logging.WARNING)
    if gpu_type is not None and gpus is None:
        fail("--gpu-type needs --gpus", 2)
    worker_name = name or socket.gethostname().split(".")[0]
    try:
        ports = parse_port_range(service_ports)
    except ValueError as exc:
        fail(f"--service-ports: {exc}", 2)
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
        running_report_window=running_report_window,
        connect_timeout=connect_timeout,
        dataset_roots=tuple(dataset_root or ()),
        allow_private_datasets=allow_private_datasets,
        max_dataset_bytes=max_dataset_bytes or DEFAULT_MAX_DATASET_BYTES,
        pids_limit=pids_limit,
        default_memory_gb=default_memory_gb,
        default_cpus=default_cpus,
        network=network,
        run_as=run_as,
        pass_env=tuple(pass_env),
        service_slots=service_slots,
        service_ports=ports,
        service_host=service_host,
        service_bind=service_bind,
        phase_log=phase_log,
    )
    config = resolve(server, key)
    client = FetchmlClient(config.server_url, config.api_key, timeout=config.timeout)
    try:
        w = Worker(cfg, client)
    except (ExecutorError, ValueError) as exc:
        fail(str(exc), 2)
        return
    # A graceful stop: no new work, running tasks get --stop-grace to finish, then are requeued
    # (without spending a retry); a second signal ends the grace, a third stops report retries.
    signal.signal(signal.SIGTERM, lambda *_: w.request_stop())
    signal.signal(signal.SIGINT, lambda *_: w.request_stop())
    try:
        w.run()
    except FetchmlError as exc:
        fail(f"{exc.code}: {exc.message}")
    finally:
        client.close()
