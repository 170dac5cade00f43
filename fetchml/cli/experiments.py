"""`fetchml experiments`: list and create experiments."""

from __future__ import annotations

import typer

from fetchml.cli.common import (
    ApiKeyOpt,
    JsonOpt,
    ServerOpt,
    client,
    console,
    fmt_time,
    handle_errors,
    print_json,
    table,
    text,
)

app = typer.Typer(help="List and create experiments (named groups of runs).", no_args_is_help=True)


@app.command("list")
@handle_errors
def list_experiments(
    limit: int = typer.Option(100, "--limit", "-n", min=1, max=1000, metavar="N", help="Show at most N."),
    offset: int = typer.Option(0, "--offset", min=0, metavar="N", help="Skip the N newest first."),
    server: str | None = ServerOpt,
    api_key: str | None = ApiKeyOpt,
    as_json: bool = JsonOpt,
) -> None:
    """List experiments, newest first."""
    with client(server, api_key) as c:
        experiments = c.experiments.list(limit=limit, offset=offset)
    if as_json:
        print_json(experiments)
        return
    rows = table(
        ("ID", {"no_wrap": True}),
        ("NAME", {"overflow": "fold", "min_width": 6}),
        ("STATUS", {"overflow": "fold", "min_width": 6}),
        ("USER", {"overflow": "fold", "min_width": 5}),
        ("COMMIT", {"overflow": "fold", "min_width": 7}),
        ("CREATED", {"min_width": 10}),
        ("DESCRIPTION", {"overflow": "fold", "min_width": 11}),
    )
    for e in experiments:
        rows.add_row(
            text(e.id),
            text(e.name),
            text(e.status.value),
            text(e.user_id),
            text(e.commit_id),
            text(fmt_time(e.created_at, seconds=False)),
            text(e.description or ""),
        )
    out = console()
    out.print(rows)
    out.print(text(f"{len(experiments)} experiments" + (f" (offset {offset})" if offset else "")))


@app.command("create")
@handle_errors
def create_experiment(
    name: str = typer.Argument(..., help="Unique experiment name, at most 128 characters."),
    description: str | None = typer.Option(
        None, "--description", "-D", metavar="D", help="Free-text description."
    ),
    commit: str | None = typer.Option(
        None, "--commit", "-c", metavar="C", help="Code version it tracks, e.g. a git commit id."
    ),
    server: str | None = ServerOpt,
    api_key: str | None = ApiKeyOpt,
    as_json: bool = JsonOpt,
) -> None:
    """Create an experiment. A name already in use fails with CONFLICT."""
    with client(server, api_key) as c:
        experiment = c.experiments.create(name, description=description, commit_id=commit)
    if as_json:
        print_json(experiment)
        return
    typer.echo(f"Created experiment {experiment.name} ({experiment.id})")
