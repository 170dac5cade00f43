"""`fetchml run`: snapshot this folder, submit, stream the logs, bring the artifacts back into
./fetchml-runs/<task id>/, exit with the task's exit code.

With no server answering at the configured URL it runs an embedded server and local worker in
this process for the life of the command (data in the default data dir, where `fetchml serve`
finds the run's history later), so a fresh machine needs nothing else."""

from __future__ import annotations

import re
import sys
from pathlib import Path
from typing import Any

import typer

from fetchml.cli.common import ApiKeyOpt, ServerOpt, fail, handle_errors
from fetchml.cli.durations import TASK_TIME_OPT, parse_minutes


def _job_name(entrypoint: str) -> str:
    first = entrypoint.split()[0] if entrypoint.split() else "run"
    stem = Path(first).stem or "run"
    return (re.sub(r"[^a-zA-Z0-9_-]+", "-", stem).strip("-") or "run")[:64]


def _say(message: str) -> None:
    sys.stderr.write(f"fetchml: {message}\n")
    sys.stderr.flush()


@handle_errors
def run(
    entrypoint: str = typer.Argument(..., metavar="ENTRYPOINT", help="train.py, run.sh, or a command."),
    args: list[str] | None = typer.Argument(None, metavar="[ARGS]...", help="Passed to the entry point."),
    gpu: int | None = typer.Option(None, "--gpu", metavar="N", help="GPUs."),
    cpu: int | None = typer.Option(None, "--cpu", metavar="N", help="CPU cores."),
    memory_gb: int | None = typer.Option(None, "--memory-gb", metavar="N", help="Memory in GB."),
    priority: int | None = typer.Option(None, "--priority", "-p", metavar="N", help="1 to 10 (default 5)."),
    image: str | None = typer.Option(
        None, "--image", metavar="IMG", help="Container image (Docker workers)."
    ),
    datasets: list[str] | None = typer.Option(
        None,
        "--dataset",
        "-d",
        metavar="SPEC",
        help="name=NAME,source=SRC,sha256=HEX[,mount_path=PATH]; repeatable.",
    ),
    name: str | None = typer.Option(None, "--name", help="Job name (default: from the entry point)."),
    time_limit: str | None = TASK_TIME_OPT,
    path: Path = typer.Option(Path("."), "--path", help="Folder to snapshot (default: the current one)."),
    embedded: bool = typer.Option(
        True, "--embedded/--no-embedded", help="Run an in-process server when none answers (default: yes)."
    ),
    output: Path | None = typer.Option(
        None,
        "--output",
        metavar="DIR",
        file_okay=False,
        help="Where the task's artifacts go when it ends (default: ./fetchml-runs/TASK_ID).",
    ),
    no_download: bool = typer.Option(
        False,
        "--no-download",
        help="Leave the artifacts on the server (`fetchml artifacts` gets them later).",
    ),
    server: str | None = ServerOpt,
    api_key: str | None = ApiKeyOpt,
) -> None:
    """Run ENTRYPOINT from this folder as a task, stream its output, and bring its artifacts
    back into ./fetchml-runs/TASK_ID/ when it ends (--output DIR puts them elsewhere,
    --no-download leaves them on the server).

    fetchml's own options go before ENTRYPOINT; everything after it is passed to the task:

      fetchml run --gpu 1 train.py --epochs 3 --lr 0.1
    """
    import shlex
    import tempfile

    from fetchml.cli import run_progress
    from fetchml.cli.tasks import parse_dataset
    from fetchml.client import FetchmlClient, ServerUnreachableError, resolve
    from fetchml.client.base import ServerTimeoutError
    from fetchml.client.snapshot_pack import pack_directory
    from fetchml.core.models import CreateTaskRequest

    request = CreateTaskRequest.model_validate(
        {
            k: v
            for k, v in {
                "job_name": name or _job_name(entrypoint),
                "entrypoint": entrypoint,
                "args": shlex.join(args) if args else None,
                "priority": priority,
                "cpu": cpu,
                "memory_gb": memory_gb,
                "gpu": gpu,
                "image": image,
                "dataset_specs": [parse_dataset(s) for s in datasets or []] or None,
                "time_limit_minutes": parse_minutes(time_limit) if time_limit is not None else None,
            }.items()
            if v is not None
        }
    )
    config = resolve(server, api_key)
    stop_embedded: Any = None
    history: Path | None = None
    client = FetchmlClient(config.server_url, config.api_key, timeout=config.timeout)
    try:
        try:
            client.health()
        except ServerUnreachableError as exc:
            # A server that answers slowly is there: a second one on the same data would not help.
            if not embedded or isinstance(exc, ServerTimeoutError):
                raise
            client.close()
            _say(f"no server at {config.server_url}; running an embedded server and local worker")
            client, stop_embedded, history = _start_embedded()
        show = run_progress.interactive()
        with tempfile.TemporaryDirectory(prefix="fetchml-snapshot-") as tmp:
            with run_progress.packing(show) as packed_so_far:
                packed = pack_directory(path.resolve(), Path(tmp) / "snapshot.tar.gz", progress=packed_so_far)
            for warning in packed.skipped:
                _say(f"snapshot: {warning}")
            if client.snapshots.exists(packed.sha256):
                _say(f"snapshot {packed.sha256[:12]} ({packed.file_count} files) already on the server")
            else:
                _say(
                    f"uploading snapshot {packed.sha256[:12]} ({packed.file_count} files, {packed.size} bytes)"
                )
                with run_progress.uploading(show, packed.size) as sent:
                    client.snapshots.upload(packed.sha256, Path(tmp) / "snapshot.tar.gz", progress=sent)
        request = request.model_copy(update={"snapshot_id": packed.sha256})
        task = client.tasks.create(request)
        _say(f"task {task.id} queued ({task.job_name}); streaming its output")
        code = _follow(client, task.id, show)
        if code != 130 and not no_download:
            code = _bring_back(client, task.id, output or Path("fetchml-runs") / task.id, code)
    finally:
        client.close()
        if stop_embedded is not None:
            stop_embedded()
    if history is not None:
        _say(
            f"this run is kept in {history}: after `fetchml serve` (which serves it), `fetchml tasks` shows it"
        )
    raise typer.Exit(code)


def _bring_back(client: Any, task_id: str, directory: Path, code: int) -> int:
    """Download the newest attempt's artifacts into `directory`; the exit code to use."""
    from fetchml.cli.artifacts import human_size
    from fetchml.core.errors import FetchmlError

    try:
        got = client.artifacts.download_all(task_id, directory)
    except (FetchmlError, OSError, ValueError) as exc:
        reason = f"{exc.code}: {exc.message}" if isinstance(exc, FetchmlError) else str(exc)
        _say(f"could not bring back the artifacts of task {task_id}: {' '.join(reason.split())}")
        return code or 1
    if not got.files:
        _say(f"task {task_id} left no artifacts")
        return code
    count = len(got.files)
    _say(
        f"{count} artifact{'s' if count != 1 else ''} ({human_size(got.size)}) of task {task_id} "
        f"in {directory}{'' if str(directory).endswith('/') else '/'}"
    )
    return code


def _follow(client: Any, task_id: str, show: bool = False) -> int:
    """Stream the task's log to stdout until it ends (with `show`, its phase on stderr until it
    runs); the exit code to use."""
    from fetchml.cli.run_progress import Phases

    try:
        with Phases(client, task_id, enabled=show) as phases:
            for line in client.logs.follow(task_id):
                phases.line(line)
    except KeyboardInterrupt:
        _say(f"interrupted: cancelling task {task_id}")
        client.tasks.cancel(task_id)
        return 130
    task = client.tasks.get(task_id)
    if task.status.value == "completed":
        _say(f"task {task_id} completed")
        return 0
    _say(f"task {task_id} {task.status.value}: {task.error or 'no error recorded'}")
    if task.exit_code is not None and task.exit_code > 0:
        return int(task.exit_code) if task.exit_code < 256 else 1
    return 1


def _start_embedded() -> tuple[Any, Any, Path]:
    import logging
    import socket

    from fetchml.cli.embedded import local_user_name, start_embedded_worker
    from fetchml.client import FetchmlClient
    from fetchml.core.enums import Role
    from fetchml.host.settings import Settings
    from fetchml.server.main import BackgroundServer

    logging.basicConfig(level=logging.WARNING, format="fetchml: %(levelname)s %(name)s %(message)s")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    settings = Settings(host="127.0.0.1", port=port, access_log=False, log_level="warning")
    server = BackgroundServer(settings)
    try:
        server.start()
    except RuntimeError as exc:
        server.services.stop()
        fail(str(exc))
    try:
        stop_worker = start_embedded_worker(
            server.services, server.url, executor="local", slots=1, wait_registered=30
        )
    except RuntimeError as exc:
        server.stop()
        fail(str(exc))
        raise
    key = server.services.keys.add_process_key(local_user_name(), Role.USER)
    client = FetchmlClient(server.url, key)

    def stop() -> None:
        stop_worker()
        server.stop()

    return client, stop, settings.data_dir
