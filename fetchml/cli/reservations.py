"""`fetchml reserve create | list`: hold free GPUs for one user's tasks (admin keys)."""

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

app = typer.Typer(
    help="Reserve free GPUs for later tasks, and list reservations (admin keys only).", no_args_is_help=True
)

RES_STYLES = {"active": "green", "claimed": "cyan", "expired": "dim"}


@app.command("create")
@handle_errors
def create(
    gpus: int = typer.Option(..., "--gpus", "-g", min=1, help="GPUs to hold on each node."),
    nodes: int = typer.Option(1, "--nodes", "-n", min=1, help="Distinct workers to hold them on."),
    gpu_type: str | None = typer.Option(None, "--gpu-type", help="Only GPUs of this type (e.g. H100)."),
    minutes: int = typer.Option(
        30, "--minutes", "-m", min=1, help="Lifetime; then the GPUs return to everyone."
    ),
    server: str | None = ServerOpt,
    api_key: str | None = ApiKeyOpt,
    as_json: bool = JsonOpt,
) -> None:
    """Hold GPUs that are free now. Tasks submitted with --reservation ID by the reservation's
    owner (or an admin) may use them; nobody else's tasks can. CONFLICT when not enough is free."""
    from fetchml.core.models import CreateReservationRequest

    req = CreateReservationRequest(
        gpu_count=gpus, node_count=nodes, gpu_type=gpu_type, expires_minutes=minutes
    )
    with client(server, api_key) as c:
        res = c.reservations.create(req)
    if as_json:
        print_json(res)
        return
    where = ", ".join(f"{w}: {','.join(map(str, g))}" for w, g in res.gpus.items())
    typer.echo(f"Reservation {res.id}: {where}; expires {fmt_time(res.expires_at)}")
    typer.echo(f"Use it with: fetchml submit ... --reservation {res.id}")


@app.command("list")
@handle_errors
def list_reservations(
    all_: bool = typer.Option(False, "--all", help="Include expired reservations."),
    server: str | None = ServerOpt,
    api_key: str | None = ApiKeyOpt,
    as_json: bool = JsonOpt,
) -> None:
    """List reservations that hold capacity now (active or claimed)."""
    with client(server, api_key) as c:
        items = c.reservations.list(include_expired=all_)
    if as_json:
        print_json(items)
        return
    rows = table(
        ("ID", {"no_wrap": True}),
        ("STATUS", {"min_width": 6}),
        ("USER", {"overflow": "fold"}),
        ("GPUS", {"overflow": "fold"}),
        ("HELD", {"overflow": "fold"}),
        ("EXPIRES", {"min_width": 10}),
    )
    for r in items:
        per = f"{r.gpu_count}" + (f" x {r.gpu_type}" if r.gpu_type else "")
        rows.add_row(
            text(r.id),
            text(r.status, RES_STYLES.get(r.status, "")),
            text(r.user_id),
            text(f"{per} on {r.node_count} node(s)"),
            text("; ".join(f"{w}: {','.join(map(str, g))}" for w, g in r.gpus.items())),
            text(fmt_time(r.expires_at)),
        )
    out = console()
    out.print(rows)
    out.print(text(f"{len(items)} reservation(s)"))
