"""`fetchml keys`: works on the database directly, so it runs whether or not a server does."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer

from fetchml.cli.common import (
    EXIT_USAGE,
    JsonOpt,
    console,
    fail,
    fmt_time,
    handle_errors,
    print_json,
    table,
    text,
)

app = typer.Typer(
    help="Create, list and revoke API keys (directly on the server's database).", no_args_is_help=True
)

DataDirOpt = typer.Option(
    None, "--data-dir", help="Server data directory, as given to `fetchml serve` (env FETCHML_DATA_DIR)."
)
DbUrlOpt = typer.Option(
    None, "--database-url", help="SQLAlchemy URL, instead of --data-dir (env FETCHML_DATABASE_URL)."
)


def _db(data_dir: Path | None, database_url: str | None, *, create: bool = False) -> Any:
    """The server's database. Only `create` may start a new one (the first admin key)."""
    from fetchml.host.settings import Settings
    from fetchml.store.db import Database

    overrides: dict[str, Any] = {}
    if data_dir is not None:
        overrides["data_dir"] = data_dir
    if database_url is not None:
        overrides["database_url"] = database_url
    settings = Settings(**overrides)
    if settings.database_url is None:
        db_file = settings.data_dir / "fetchml.db"
        if not create and not db_file.exists():
            fail(f"NOT_FOUND: no fetchml database at {db_file}; check --data-dir or FETCHML_DATA_DIR")
        settings.ensure_data_dir()
    db = Database(settings.resolved_database_url)
    db.migrate()
    return db


@app.command("create")
@handle_errors
def create(
    user: str = typer.Option(..., "--user", help="Name the key acts as (letters, digits, _ and -)."),
    role: str = typer.Option("user", "--role", help="admin, user or worker."),
    worker_name: str | None = typer.Option(
        None,
        "--worker-name",
        help="Worker keys only: the one worker name this key may register (default: --user).",
    ),
    data_dir: Path | None = DataDirOpt,
    database_url: str | None = DbUrlOpt,
    as_json: bool = JsonOpt,
) -> None:
    """Create a key. The key itself is printed once, as the last line of stdout."""
    from fetchml.core.enums import Role
    from fetchml.core.models import CreateKeyRequest
    from fetchml.services.keys import create_key_op
    from fetchml.services.principal import LOCAL_OPERATOR
    from fetchml.services.write_queue import run_write

    if role not in Role._value2member_map_:
        fail(f"VALIDATION_ERROR: role: must be one of {', '.join(r.value for r in Role)}", EXIT_USAGE)
    req = CreateKeyRequest(user=user, role=Role(role), worker_name=worker_name)
    db = _db(data_dir, database_url, create=True)
    created = run_write(db, create_key_op(req.user, req.role, LOCAL_OPERATOR, worker_name=req.worker_name))
    if as_json:
        print_json(created)
        return
    bound = f" (worker name {created.worker_name})" if created.worker_name else ""
    typer.echo(
        f"Created {created.role.value} key {created.id} for {created.user_id}{bound}. It is shown only now:",
        err=True,
    )
    typer.echo(created.key)


@app.command("list")
@handle_errors
def list_keys(
    data_dir: Path | None = DataDirOpt, database_url: str | None = DbUrlOpt, as_json: bool = JsonOpt
) -> None:
    """List keys (ids, users, roles, prefixes; never the keys)."""
    from fetchml.services.keys import list_keys_query

    db = _db(data_dir, database_url)
    with db.read() as session:
        keys = list_keys_query(session)
    if as_json:
        print_json(keys)
        return
    rows = table(
        ("ID", {"no_wrap": True}),
        ("USER", {"overflow": "fold"}),
        ("ROLE", {"no_wrap": True}),
        ("WORKER", {"overflow": "fold"}),
        ("PREFIX", {"no_wrap": True}),
        ("CREATED", {"min_width": 10}),
        ("REVOKED", {"min_width": 10}),
    )
    for k in keys:
        rows.add_row(
            text(k.id),
            text(k.user_id),
            text(k.role.value),
            text(k.worker_name or ""),
            text(k.prefix + "…"),
            text(fmt_time(k.created_at, seconds=False)),
            text(fmt_time(k.revoked_at, seconds=False)),
        )
    console().print(rows)


@app.command("revoke")
@handle_errors
def revoke(
    key_id: str = typer.Argument(..., help="Key id (key_...), as shown by `fetchml keys list`."),
    data_dir: Path | None = DataDirOpt,
    database_url: str | None = DbUrlOpt,
) -> None:
    """Revoke a key. Servers stop accepting it within FETCHML_AUTH_CACHE_SECONDS."""
    from fetchml.services.keys import revoke_key_op
    from fetchml.services.principal import LOCAL_OPERATOR
    from fetchml.services.write_queue import run_write

    info = run_write(_db(data_dir, database_url), revoke_key_op(key_id, LOCAL_OPERATOR))
    typer.echo(f"Revoked {info.id} ({info.user_id}, {info.role.value})")
