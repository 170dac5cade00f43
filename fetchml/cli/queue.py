"""`fetchml queue`: queue statistics."""

from __future__ import annotations

from fetchml.cli.common import (
    ApiKeyOpt,
    JsonOpt,
    ServerOpt,
    client,
    console,
    handle_errors,
    print_json,
    table,
)


@handle_errors
def queue(server: str | None = ServerOpt, api_key: str | None = ApiKeyOpt, as_json: bool = JsonOpt) -> None:
    """Show queue statistics: queued and running tasks, tasks ended today, active workers.

    "Today" starts at local midnight in the server's FETCHML_TIMEZONE (UTC by default).
    """
    with client(server, api_key) as c:
        stats = c.queue.stats()
    if as_json:
        print_json(stats)
        return
    rows = table(
        *(
            (name, {"justify": "right"})
            for name in ("QUEUED", "RUNNING", "COMPLETED TODAY", "FAILED TODAY", "WORKERS")
        )
    )
    rows.add_row(
        str(stats.queued), str(stats.running), str(stats.completed), str(stats.failed), str(stats.workers)
    )
    console().print(rows)
