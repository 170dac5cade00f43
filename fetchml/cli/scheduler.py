"""`fetchml scheduler status`: worker counts, queue depths and throughput (admin keys)."""

from __future__ import annotations

from typing import Any

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
)

app = typer.Typer(help="The scheduler's state (admin keys only).", no_args_is_help=True)


@app.command("status")
@handle_errors
def status(
    server: str | None = ServerOpt,
    api_key: str | None = ApiKeyOpt,
    as_json: bool = JsonOpt,
) -> None:
    """Show worker counts, queue depths, running tasks and completions in the last 24 hours."""
    with client(server, api_key) as c:
        st = c.scheduler.status()
    if as_json:
        print_json(st)
        return
    offline = st.workers_total - st.workers_active - st.workers_draining
    rows: list[tuple[str, Any]] = [
        (
            "workers",
            f"{st.workers_total} ({st.workers_active} active, {st.workers_draining} draining, "
            f"{offline} offline)",
        ),
        ("queued (batch)", str(st.batch_queue_depth)),
        ("queued (service)", str(st.service_queue_depth)),
        ("running", str(st.tasks_running)),
        ("completed (24 h)", str(st.tasks_completed_24h)),
        ("reservations", str(st.reservations_active)),
        ("at", fmt_time(st.timestamp)),
    ]
    console().print(kv_table(rows, title="Scheduler"))
