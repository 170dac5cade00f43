"""`fetchml submit`, `tasks`, `status`, `cancel`: tasks on a server."""

from __future__ import annotations

import re
from typing import Any

import typer

from fetchml.cli.common import (
    STATUS_STYLES,
    ApiKeyOpt,
    JsonOpt,
    ServerOpt,
    client,
    console,
    fmt_time,
    handle_errors,
    kv_table,
    plain,
    print_json,
    text,
)
from fetchml.cli.durations import TASK_TIME_OPT, format_minutes, parse_minutes

DATASET_FIELDS = ("name", "source", "sha256", "mount_path")
DATASET_FORMAT = "name=NAME,source=SRC,sha256=HEX with optional ,mount_path=PATH"
# A comma starts a new field only when `word=` follows, so a source may contain other commas.
_DATASET_SPLIT = re.compile(r",(?=[A-Za-z_][A-Za-z0-9_]*=)")

TASK_STATUSES = "queued, preparing, running, collecting, completed, failed"


def parse_dataset(spec: str) -> dict[str, str]:
    """`name=N,source=S,sha256=H[,mount_path=P]` -> a DatasetSpec-shaped dict.

    Values are checked (sha256 is 64 hex characters, mount_path stays in the workspace...)
    by the request model; this only checks the format. Raises ValueError on a bad one.
    """
    fields: dict[str, str] = {}
    for part in _DATASET_SPLIT.split(spec.strip()):
        name, sep, value = part.partition("=")
        name = name.strip()
        if not sep or name not in DATASET_FIELDS:
            raise ValueError(
                f"invalid --dataset {spec!r}: unknown field {name!r}; expected {DATASET_FORMAT}"
                if sep
                else f"invalid --dataset {spec!r}: expected {DATASET_FORMAT}"
            )
        if name in fields:
            raise ValueError(f"invalid --dataset {spec!r}: {name} given twice")
        if not value.strip():
            raise ValueError(f"invalid --dataset {spec!r}: {name} is empty")
        fields[name] = value.strip()
    missing = [f for f in ("name", "source", "sha256") if f not in fields]
    if missing:
        raise ValueError(
            f"invalid --dataset {spec!r}: missing {', '.join(missing)}; expected {DATASET_FORMAT}"
        )
    return fields


def parse_meta(items: list[str]) -> dict[str, str]:
    """Repeated KEY=VALUE -> dict. Raises ValueError on a bad or repeated key."""
    meta: dict[str, str] = {}
    for item in items:
        key, sep, value = item.partition("=")
        key = key.strip()
        if not sep or not key:
            raise ValueError(f"invalid --meta {item!r}: expected KEY=VALUE")
        if key in meta:
            raise ValueError(f"invalid --meta {item!r}: {key} given twice")
        meta[key] = value
    return meta


def parse_plugins(items: list[str]) -> dict[str, dict[str, Any]]:
    """Repeated NAME[:KEY=VALUE[,KEY=VALUE...]] -> plugin_configs. Raises ValueError."""
    out: dict[str, dict[str, Any]] = {}
    for item in items:
        name, _, rest = item.partition(":")
        name = name.strip()
        if not name:
            raise ValueError(f"invalid --plugin {item!r}: expected NAME[:KEY=VALUE,...]")
        if name in out:
            raise ValueError(f"invalid --plugin {item!r}: {name} given twice")
        settings: dict[str, str] = {}
        for pair in filter(None, rest.split(",")):
            key, sep, value = pair.partition("=")
            if not sep or not key.strip():
                raise ValueError(f"invalid --plugin {item!r}: expected KEY=VALUE after the name")
            settings[key.strip()] = value
        out[name] = {"settings": settings} if settings else {}
    return out


@handle_errors
def submit(
    name: str = typer.Argument(..., help="Job name: letters, digits, _ and -, at most 64 characters."),
    entrypoint: str = typer.Option(
        ...,
        "--entrypoint",
        "-e",
        metavar="CMD",
        help='Script or command to run, e.g. train.py or "python -m x".',
    ),
    args: str | None = typer.Option(
        None, "--args", metavar="STR", help="Arguments for the entrypoint, one string."
    ),
    priority: int | None = typer.Option(
        None, "--priority", "-p", metavar="N", help="1 to 10, higher runs first (default 5)."
    ),
    cpu: int | None = typer.Option(None, "--cpu", metavar="N", help="CPU cores requested."),
    memory_gb: int | None = typer.Option(None, "--memory-gb", metavar="N", help="Memory requested, in GB."),
    gpu: int | None = typer.Option(None, "--gpu", metavar="N", help="GPUs requested (per node)."),
    gpu_type: str | None = typer.Option(
        None, "--gpu-type", metavar="T", help="Required GPU type, e.g. A100."
    ),
    image: str | None = typer.Option(None, "--image", metavar="IMG", help="Container image to run in."),
    datasets: list[str] | None = typer.Option(
        None,
        "--dataset",
        "-d",
        metavar="SPEC",
        help=(
            "Dataset to stage into the workspace; repeatable. SPEC is "
            "name=NAME,source=SRC,sha256=HEX with optional ,mount_path=PATH "
            "(SRC: a local path, file://, http:// or https:// URL; PATH relative, default NAME)."
        ),
    ),
    max_retries: int | None = typer.Option(
        None, "--max-retries", metavar="N", help="Retries after a lost worker (0-100; default: server's)."
    ),
    node_count: int | None = typer.Option(
        None, "--node-count", metavar="N", help="Nodes for a multi-node (gang) job (default 1)."
    ),
    reservation: str | None = typer.Option(
        None, "--reservation", metavar="ID", help="Run on capacity you reserved earlier."
    ),
    meta: list[str] | None = typer.Option(
        None, "--meta", "-m", metavar="KEY=VALUE", help="Metadata attached to the task; repeatable."
    ),
    plugins: list[str] | None = typer.Option(
        None,
        "--plugin",
        metavar="NAME[:KEY=VALUE,...]",
        help="Track the run with an enabled plugin (mlflow, tensorboard, wandb), e.g. mlflow:experiment=resnet; repeatable.",
    ),
    time_limit: str | None = TASK_TIME_OPT,
    server: str | None = ServerOpt,
    api_key: str | None = ApiKeyOpt,
    as_json: bool = JsonOpt,
) -> None:
    """Queue a task. Prints its id (with --json, the whole task).

    Examples:

      fetchml submit resnet -e train.py --args="--epochs 10" --gpu 1
      fetchml submit eval -e eval.py -d name=val,source=/d/val.tar,sha256=HEX
      fetchml submit r50 -e train.py --plugin mlflow:experiment=resnet --plugin wandb
      fetchml submit sweep -e sweep.py --time 1h30m
    """
    from fetchml.core.models import CreateTaskRequest

    # Bad --dataset / --meta (ValueError) and bad values (pydantic) become one line, exit 2.
    specs = [parse_dataset(spec) for spec in datasets or []]
    body: dict[str, Any] = {
        "job_name": name,
        "entrypoint": entrypoint,
        "args": args,
        "priority": priority,
        "cpu": cpu,
        "memory_gb": memory_gb,
        "gpu": gpu,
        "gpu_type": gpu_type,
        "image": image,
        "dataset_specs": specs or None,
        "max_retries": max_retries,
        "node_count": node_count,
        "reservation_id": reservation,
        "metadata": parse_meta(meta or []) or None,
        "plugin_configs": parse_plugins(plugins or []) or None,
        "time_limit_minutes": parse_minutes(time_limit) if time_limit is not None else None,
    }
    # Checked here first: a bad request fails in one line, exit 2, without a round trip.
    request = CreateTaskRequest.model_validate({k: v for k, v in body.items() if v is not None})
    with client(server, api_key) as c:
        task = c.tasks.create(request)
    if as_json:
        print_json(task)
        return
    typer.echo(f"Queued task {task.id} ({task.job_name}, priority {task.priority})")


@handle_errors
def list_tasks(
    status: str | None = typer.Option(
        None, "--status", "-s", metavar="S", help=f"Only tasks in S: {TASK_STATUSES}."
    ),
    user: str | None = typer.Option(
        None, "--user", "-u", metavar="U", help="Only tasks submitted by user U."
    ),
    limit: int = typer.Option(
        50, "--limit", "-n", min=1, max=1000, metavar="N", help="Show at most N tasks."
    ),
    offset: int = typer.Option(0, "--offset", min=0, metavar="N", help="Skip the N newest tasks first."),
    server: str | None = ServerOpt,
    api_key: str | None = ApiKeyOpt,
    as_json: bool = JsonOpt,
) -> None:
    """List tasks, newest first."""
    from fetchml.cli import tasklist

    with client(server, api_key) as c:
        page = c.tasks.list(status=status, user_id=user, limit=limit, offset=offset)
    # The fast path (fetchml/cli/fast.py) prints the server's page through the same renderer.
    tasklist.show(plain(page), as_json)


def _resources(t: Any) -> str:
    parts = []
    if t.cpu is not None:
        parts.append(f"cpu {t.cpu}")
    if t.memory_gb is not None:
        parts.append(f"memory {t.memory_gb} GB")
    if t.gpu is not None or t.gpu_type:
        parts.append(
            f"gpu {t.gpu if t.gpu is not None else '-'}" + (f" x {t.gpu_type}" if t.gpu_type else "")
        )
    return ", ".join(parts) or "-"


@handle_errors
def status(
    task_id: str = typer.Argument(..., help="Task id, as printed by submit or tasks."),
    server: str | None = ServerOpt,
    api_key: str | None = ApiKeyOpt,
    as_json: bool = JsonOpt,
) -> None:
    """Show everything about one task."""
    with client(server, api_key) as c:
        t = c.tasks.get(task_id)
    if as_json:
        print_json(t)
        return
    from rich.panel import Panel

    rows: list[tuple[str, Any]] = [
        ("id", t.id),
        ("job", t.job_name),
        ("status", text(t.status.value, STATUS_STYLES.get(t.status.value, ""))),
        ("priority", f"{t.priority} (aged {t.priority_aged:.2f})"),
        ("user", t.user_id),
        ("created", fmt_time(t.created_at)),
        ("started", fmt_time(t.started_at)),
        ("ended", fmt_time(t.ended_at)),
        ("worker", t.worker_id or "-"),
        ("entrypoint", t.entrypoint or "-"),
        ("args", t.args or "-"),
        ("image", t.image or "-"),
        ("resources", _resources(t)),
        ("nodes", str(t.node_count)),
        ("retries", f"{t.retry_count} of {t.max_retries}"),
    ]
    if t.time_limit_minutes is not None:
        rows.append(("time limit", format_minutes(t.time_limit_minutes)))
    if t.reservation_id:
        rows.append(("reservation", t.reservation_id))
    if t.snapshot_id:
        rows.append(("snapshot", t.snapshot_id))
    for d in t.dataset_specs:
        mount = d.mount_path or d.name
        rows.append(("dataset", f"{d.name} <- {d.source} (sha256 {d.sha256[:12]}…) at {mount}"))
    for name in t.datasets:
        rows.append(("dataset", name))
    for key, value in sorted(t.metadata.items()):
        rows.append(("meta", f"{key}={value}"))
    for n in t.node_assignments:
        gpus = f" gpus {','.join(map(str, n.gpus))}" if n.gpus else ""
        state = n.status or ("started" if n.slot_assigned else "waiting for its worker")
        rows.append(("node", f"{n.node_id} on {n.worker_id}{gpus} ({state})"))
    for name, ps in sorted(t.plugin_status.items()):
        rows.append(("plugin", f"{name}: {ps.status or '-'}" + (f" {ps.url}" if ps.url else "")))
    if t.pending_reason:
        rows.append(("pending", text(t.pending_reason, "yellow")))
    if t.error:
        rows.append(("error", text(t.error, "red")))
    if t.output:
        rows.append(("output", t.output))
    console().print(Panel(kv_table(rows), title=text(f"Task {t.id}"), title_align="left", expand=False))


@handle_errors
def cancel(
    task_id: str = typer.Argument(..., help="Task id to cancel."),
    server: str | None = ServerOpt,
    api_key: str | None = ApiKeyOpt,
) -> None:
    """Cancel a task. A queued task fails at once with error "cancelled"."""
    with client(server, api_key) as c:
        c.tasks.cancel(task_id)
    typer.echo(f"Cancelled {task_id}")
