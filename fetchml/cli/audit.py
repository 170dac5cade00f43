"""`fetchml audit`: query and verify the tamper-evident audit log (admin keys only)."""

from __future__ import annotations

from datetime import datetime

import typer

from fetchml.cli.common import (
    EXIT_ERROR,
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
    help="Query the audit log and verify its hash chain. Needs an admin key.", no_args_is_help=True
)

EVENT_TYPES = (
    "job_queued, job_started, job_completed, job_cancelled, file_access, auth_attempt, "
    "plugin_configured, scheduler_drain, audit_verified, experiment_created, key_created, key_revoked, "
    "priority_changed, reservation_created, reservation_claimed, reservation_expired"
)


def parse_when(value: str | None, flag: str) -> datetime | None:
    """ISO 8601 date or date-time; one without a UTC offset is local time."""
    if value is None:
        return None
    try:
        when = datetime.fromisoformat(value.strip())
    except ValueError:
        raise ValueError(
            f"invalid {flag} {value!r}: expected an ISO 8601 date or time, "
            "e.g. 2024-05-01, 2024-05-01T09:30 or 2024-05-01T09:30:00Z"
        ) from None
    return when if when.tzinfo is not None else when.astimezone()


@app.command("events")
@handle_errors
def events(
    start: str | None = typer.Option(
        None, "--from", metavar="ISO", help="Only events at or after this time (no offset: local time)."
    ),
    end: str | None = typer.Option(None, "--to", metavar="ISO", help="Only events at or before this time."),
    event_type: str | None = typer.Option(
        None, "--type", "-t", metavar="T", help=f"Only events of type T: {EVENT_TYPES}."
    ),
    user: str | None = typer.Option(None, "--user", "-u", metavar="U", help="Only events by user U."),
    limit: int = typer.Option(
        100, "--limit", "-n", min=1, max=1000, metavar="N", help="Show at most N events."
    ),
    offset: int = typer.Option(0, "--offset", min=0, metavar="N", help="Skip the N newest events first."),
    server: str | None = ServerOpt,
    api_key: str | None = ApiKeyOpt,
    as_json: bool = JsonOpt,
) -> None:
    """List audit events, newest first."""
    since, until = parse_when(start, "--from"), parse_when(end, "--to")
    with client(server, api_key) as c:
        page = c.audit.events(
            start=since, end=until, event_type=event_type, user_id=user, limit=limit, offset=offset
        )
    if as_json:
        print_json(page)
        return
    rows = table(
        ("SEQ", {"justify": "right", "no_wrap": True}),
        ("TIME", {"min_width": 10}),
        ("TYPE", {"overflow": "fold", "min_width": 8}),
        ("USER", {"overflow": "fold", "min_width": 5}),
        ("RESOURCE", {"overflow": "fold", "min_width": 8}),
        ("ACTION", {"overflow": "fold", "min_width": 6}),
        ("OK", {"no_wrap": True}),
        ("ERROR", {"overflow": "fold", "min_width": 5}),
    )
    for e in page.events:
        rows.add_row(
            text(e.sequence_num),
            text(fmt_time(e.timestamp)),
            text(e.event_type.value),
            text(e.user_id),
            text(e.resource),
            text(e.action),
            text("yes", "green") if e.success else text("no", "red"),
            text(e.error or "", "red"),
        )
    out = console()
    out.print(rows)
    footer = f"{len(page.events)} of {page.total} events"
    if page.offset:
        footer += f" (offset {page.offset})"
    if page.offset + len(page.events) < page.total:
        footer += f"; next page: --offset {page.offset + len(page.events)}"
    out.print(text(footer))


@app.command("verify")
@handle_errors
def verify(server: str | None = ServerOpt, api_key: str | None = ApiKeyOpt, as_json: bool = JsonOpt) -> None:
    """Walk the hash chain on the server. Exits 1 when it is broken, naming the first bad event."""
    with client(server, api_key) as c:
        result = c.audit.verify()
    if as_json:
        print_json(result)
    elif result.valid:
        console().print(
            text(f"Audit chain valid: {result.total_events} events, root {result.chain_root_hash}", "green"),
            soft_wrap=True,
        )
    else:
        reason = f" ({result.reason})" if result.reason else ""
        console().print(
            text(
                f"Audit chain INVALID: first tampered event is #{result.first_tampered}{reason}; "
                f"{result.total_events} events checked",
                "bold red",
            ),
            soft_wrap=True,
        )
    if not result.valid:
        raise typer.Exit(EXIT_ERROR)


@app.command("root")
@handle_errors
def root(server: str | None = ServerOpt, api_key: str | None = ApiKeyOpt, as_json: bool = JsonOpt) -> None:
    """Print the chain root: the latest event's hash, to keep somewhere outside the server."""
    with client(server, api_key) as c:
        chain = c.audit.chain_root()
    if as_json:
        print_json(chain)
        return
    typer.echo(chain.root_hash)
    typer.echo(f"{chain.total_events} events; last at {fmt_time(chain.timestamp)}")
