"""`fetchml priority`: change a queued or running task's priority."""

from __future__ import annotations

import typer

from fetchml.cli.common import ApiKeyOpt, JsonOpt, ServerOpt, client, handle_errors, print_json


@handle_errors
def priority(
    task_id: str = typer.Argument(..., help="Task id, as printed by submit or tasks."),
    value: int = typer.Argument(..., metavar="N", help="New priority, 1 to 10; higher runs first."),
    server: str | None = ServerOpt,
    api_key: str | None = ApiKeyOpt,
    as_json: bool = JsonOpt,
) -> None:
    """Set a task's priority (your own task, or any with an admin key).

    Only a queued or active task may change; one that has ended is CONFLICT. Audited as priority_changed.
    """
    from fetchml.core.models import PriorityUpdate

    # Checked here first: 0 or 11 fails in one line, exit 2, without a round trip.
    body = PriorityUpdate.model_validate({"priority": value})
    with client(server, api_key) as c:
        task = c.scheduler.set_priority(task_id, body.priority)
    if as_json:
        print_json(task)
        return
    typer.echo(f"Priority of {task.id} ({task.job_name}) is now {task.priority}")
