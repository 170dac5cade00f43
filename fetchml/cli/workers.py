"""`fetchml workers list | show | drain`: the workers a server knows (admin keys)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import typer

from fetchml.cli.common import (
    ApiKeyOpt,
    JsonOpt,
    ServerOpt,
    client,
    console,
    fmt_time,
    handle_errors,
    kv_table,
    print_json,
    table,
    text,
)

if TYPE_CHECKING:
    from fetchml.core.protocol import WorkerInfo

app = typer.Typer(
    help="List, inspect and drain the workers of a server (admin keys only).", no_args_is_help=True
)

WORKER_STYLES = {"active": "green", "draining": "yellow", "offline": "dim"}
WorkerIdArg = typer.Argument(..., help="Worker id (its name), as shown by `fetchml workers list`.")


def _gpus(w: WorkerInfo) -> str:
    caps = w.capabilities
    if not caps.gpu_count:
        return "0"
    return f"{caps.gpu_count} x {caps.gpu_type}" if caps.gpu_type else str(caps.gpu_count)


def _status(w: WorkerInfo) -> Any:
    return text(w.status.value, WORKER_STYLES.get(w.status.value, ""))


@app.command("list")
@handle_errors
def list_workers(
    server: str | None = ServerOpt,
    api_key: str | None = ApiKeyOpt,
    as_json: bool = JsonOpt,
) -> None:
    """List every worker the server knows, offline ones too, by id."""
    with client(server, api_key) as c:
        workers = c.scheduler.workers()
    if as_json:
        print_json(workers)
        return
    rows = table(
        ("ID", {"no_wrap": True}),
        ("STATUS", {"overflow": "fold", "min_width": 6}),
        ("GPUS", {"overflow": "fold", "min_width": 4}),
        ("CPUS", {"justify": "right", "no_wrap": True}),
        ("MEMORY", {"justify": "right", "no_wrap": True}),
        ("BATCH FREE", {"justify": "right", "no_wrap": True}),
        ("TASKS", {"justify": "right", "no_wrap": True}),
        ("LAST HEARTBEAT", {"min_width": 10}),
    )
    counts: dict[str, int] = {}
    for w in workers:
        counts[w.status.value] = counts.get(w.status.value, 0) + 1
        rows.add_row(
            text(w.id),
            _status(w),
            text(_gpus(w)),
            text(w.capabilities.cpu_cores),
            text(f"{w.capabilities.memory_gb} GB"),
            text(f"{w.slots.batch_available}/{w.slots.batch_total}"),
            text(len(w.active_tasks)),
            text(fmt_time(w.last_heartbeat)),
        )
    out = console()
    out.print(rows)
    summary = ", ".join(f"{n} {s}" for s, n in sorted(counts.items()))
    out.print(text(f"{len(workers)} workers" + (f" ({summary})" if summary else "")))


@app.command("show")
@handle_errors
def show_worker(
    worker_id: str = WorkerIdArg,
    server: str | None = ServerOpt,
    api_key: str | None = ApiKeyOpt,
    as_json: bool = JsonOpt,
) -> None:
    """Show one worker: status, capabilities, slots, active tasks, last heartbeat."""
    with client(server, api_key) as c:
        w = c.scheduler.worker(worker_id)
    if as_json:
        print_json(w)
        return
    from rich.panel import Panel

    caps = w.capabilities
    s = w.slots
    rows: list[tuple[str, Any]] = [
        ("id", w.id),
        ("status", _status(w)),
        ("connected", fmt_time(w.connected_at)),
        ("last heartbeat", fmt_time(w.last_heartbeat)),
        ("host", caps.hostname or "-"),
        ("executor", caps.executor),
        ("version", caps.fetchml_version or "-"),
        ("cpus", str(caps.cpu_cores)),
        ("memory", f"{caps.memory_gb} GB"),
        ("gpus", _gpus(w)),
    ]
    for g in caps.gpus:
        rows.append(("gpu", f"{g.index}: {g.name}" + (f" ({g.memory_mb} MiB)" if g.memory_mb else "")))
    rows.append(("batch slots", f"{s.batch_available} free of {s.batch_total}"))
    rows.append(("service slots", f"{s.service_available} free of {s.service_total}"))
    for task_id in w.active_tasks:
        rows.append(("task", task_id))
    if not w.active_tasks:
        rows.append(("tasks", "none"))
    console().print(Panel(kv_table(rows), title=text(f"Worker {w.id}"), title_align="left", expand=False))


@app.command("drain")
@handle_errors
def drain_worker(
    worker_id: str = WorkerIdArg,
    server: str | None = ServerOpt,
    api_key: str | None = ApiKeyOpt,
) -> None:
    """Drain a worker: no new tasks; what it runs finishes; then it goes offline.

    Draining a draining worker again is accepted; an offline worker is CONFLICT.
    """
    with client(server, api_key) as c:
        c.scheduler.drain(worker_id)
    typer.echo(f"Draining {worker_id}: no new tasks; it goes offline once its running tasks finish")
