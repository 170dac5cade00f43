"""`fetchml audit`: query and verify the tamper-evident audit log (admin keys only)."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Any

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
    "priority_changed, reservation_created, reservation_claimed, reservation_expired, "
    "jupyter_started, jupyter_stopped, jupyter_failed"
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
            start=since,
            end=until,
            event_type=event_type,
            user_id=user,
            limit=limit,
            offset=offset,
            include_extended=True,  # an auditor sees every type, ours too
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
def verify(
    file: Path | None = typer.Option(
        None,
        "--file",
        "-f",
        metavar="FILE.jsonl",
        help="Verify this export offline (no server needed) instead of asking the server.",
    ),
    public_keys: list[Path] = typer.Option(
        [],
        "--public-key",
        "-k",
        metavar="KEY.pem",
        help="With --file: a public key the checkpoints must verify with (repeatable: old keys "
        "after a rotation, one per server). Keep them somewhere other than the server.",
    ),
    workers: int = typer.Option(
        0, "--workers", min=0, metavar="N", help="With --file: processes to use (0: one per CPU)."
    ),
    server: str | None = ServerOpt,
    api_key: str | None = ApiKeyOpt,
    as_json: bool = JsonOpt,
) -> None:
    """Verify the hash chain and its signed checkpoints. Exits 1 when anything is wrong, naming the
    first bad event or the bad checkpoint.

    Without --file the server walks its own database. With --file (an `audit export`), this
    machine checks every event's hash and link, and every checkpoint's signature (with
    --public-key), root and position: an edit, a deletion, a reorder, a truncated tail and a
    chain rewritten and re-signed with another key all fail."""
    if file is not None:
        result = _verify_offline(file, public_keys, workers)
        where = f"{file}: "
    else:
        if public_keys:
            raise ValueError("--public-key needs --file (the server checks with its own keys)")
        with client(server, api_key) as c:
            result = c.audit.verify()
        where = ""
    if as_json:
        print_json(result)
    elif result.valid:
        cps = getattr(result, "checkpoints_verified", 0)
        signed = f"; {cps} signed checkpoints verified" if cps else ""
        console().print(
            text(
                f"{where}Audit chain valid: {result.total_events} events, root {result.chain_root_hash}{signed}",
                "green",
            ),
            soft_wrap=True,
        )
    else:
        reason = f" ({result.reason})" if result.reason else ""
        bad_cp = getattr(result, "bad_checkpoint", None)
        what = (
            f"bad checkpoint at seq {bad_cp}"
            if bad_cp is not None
            else f"first tampered event is #{result.first_tampered}"
            if result.first_tampered is not None
            else "invalid"
        )
        console().print(
            text(
                f"{where}Audit chain INVALID: {what}{reason}; {result.total_events} events checked",
                "bold red",
            ),
            soft_wrap=True,
        )
    if not result.valid:
        raise typer.Exit(EXIT_ERROR)


def _verify_offline(file: Path, public_keys: list[Path], workers: int) -> Any:
    from fetchml.core.audit import load_public_keys
    from fetchml.host.auditfile import verify_file

    if not public_keys:
        raise ValueError(
            "--file needs --public-key KEY.pem: without it no checkpoint signature can be checked "
            "(get it with `fetchml audit public-key`, and keep it off the server)"
        )
    keys = []
    for path in public_keys:
        try:
            keys += load_public_keys(path.read_bytes())
        except ValueError as exc:
            raise ValueError(f"{path}: {exc}") from None
    return verify_file(file, keys, workers=workers or None)


@app.command("export")
@handle_errors
def export(
    out: Path = typer.Option(..., "--out", "-o", metavar="FILE.jsonl", help="Write the export here."),
    page: int = typer.Option(1000, "--page", min=1, max=1000, metavar="N", help="Events per request."),
    server: str | None = ServerOpt,
    api_key: str | None = ApiKeyOpt,
) -> None:
    """Write every audit event and signed checkpoint to FILE.jsonl, for offline verification.

    One JSON object per line with "kind": "event" or "checkpoint", in sequence order, each
    checkpoint right after the event it covers. Events appended while the export runs are left
    for the next one. Memory stays bounded however long the chain is."""
    import os
    import sys

    from fetchml.core.timeutil import utcnow
    from fetchml.host.auditfile import checkpoint_line, event_line, header_line

    progress = sys.stderr.isatty()
    tmp = out.with_name(out.name + ".partial")
    events = cps = 0
    with client(server, api_key) as c:
        # The newest checkpoint first, then the head: every checkpoint up to that one existed
        # before the head was read, so one past the head is a chain that lost its tail, and it
        # goes into the file as evidence. Checkpoints signed during the export are left out.
        total = c.audit.checkpoints(limit=1).total
        newest = c.audit.checkpoints(offset=max(0, total - 1), limit=1).checkpoints
        end = c.audit.chain_root().total_events
        cp_iter = _checkpoints(c, max(end, newest[-1].sequence_num if newest else 0))
        next_cp = next(cp_iter, None)
        with open(tmp, "wb") as f:
            f.write(header_line(utcnow()))
            after = 0
            while after < end:
                # Every type: the export is the whole chain, with no gap in sequence numbers.
                batch = c.audit.events(after_seq=after, limit=page, include_extended=True).events
                if not batch:
                    break
                for e in batch:
                    if e.sequence_num > end:
                        break
                    f.write(event_line(e.model_dump(mode="python") | {"event_type": e.event_type.value}))
                    events += 1
                    while next_cp is not None and next_cp.sequence_num <= e.sequence_num:
                        f.write(checkpoint_line(next_cp.model_dump()))
                        cps += 1
                        next_cp = next(cp_iter, None)
                after = batch[-1].sequence_num
                if progress:
                    sys.stderr.write(f"\rexported {events} events, {cps} checkpoints (seq {after}/{end})")
            # Checkpoints past the last event (a chain that lost its tail) go last, as evidence.
            while next_cp is not None:
                f.write(checkpoint_line(next_cp.model_dump()))
                cps += 1
                next_cp = next(cp_iter, None)
            f.flush()
            os.fsync(f.fileno())
    os.replace(tmp, out)
    if progress:
        sys.stderr.write("\n")
    typer.echo(f"wrote {events} events and {cps} checkpoints to {out}", err=True)


def _checkpoints(c: Any, end: int) -> Any:
    """The server's checkpoints up to sequence number `end`, oldest first, page by page."""
    after = 0
    while True:
        page = c.audit.checkpoints(after=after, limit=1000).checkpoints
        if not page:
            return
        for cp in page:
            if cp.sequence_num > end:
                return
            yield cp
        after = page[-1].sequence_num


@app.command("public-key")
@handle_errors
def public_key(
    server: str | None = ServerOpt, api_key: str | None = ApiKeyOpt, as_json: bool = JsonOpt
) -> None:
    """Print the server's checkpoint public key (PEM). Keep a copy off the server:
    `fetchml audit public-key > audit.pub`, then `fetchml audit verify --file ... --public-key audit.pub`."""
    with client(server, api_key) as c:
        key = c.audit.public_key()
    if as_json:
        print_json(key)
        return
    typer.echo(key.public_key_pem, nl=False)
    typer.echo(f"key_id {key.key_id}", err=True)


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
