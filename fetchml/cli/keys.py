"""`fetchml keys`: works on the database directly, so it runs whether or not a server does."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer

from fetchml.cli.common import JsonOpt, console, fail, fmt_time, print_json

app = typer.Typer(
    help="Create, list and revoke API keys (directly on the server's database).", no_args_is_help=True
)

DataDirOpt = typer.Option(None, "--data-dir", help="Server data directory [env FETCHML_DATA_DIR].")
DbUrlOpt = typer.Option(None, "--database-url", help="SQLAlchemy URL [env FETCHML_DATABASE_URL].")


def _db(data_dir: Path | None, database_url: str | None) -> Any:
    from fetchml.core.settings import Settings
    from fetchml.store.db import Database

    overrides: dict[str, Any] = {}
    if data_dir is not None:
        overrides["data_dir"] = data_dir
    if database_url is not None:
        overrides["database_url"] = database_url
    settings = Settings(**overrides)
    if settings.database_url is None:
        settings.ensure_data_dir()
    db = Database(settings.resolved_database_url)
    db.migrate()
    return db


@app.command("create")
def create(
    user: str = typer.Option(..., "--user", help="Name the key acts as."),
    role: str = typer.Option("user", "--role", help="admin, user or worker."),
    data_dir: Path = DataDirOpt,
    database_url: str = DbUrlOpt,
    as_json: bool = JsonOpt,
) -> None:
    """Create a key. The key itself is printed once, as the last line of stdout."""
    from pydantic import ValidationError

    from fetchml.core.enums import Role
    from fetchml.core.models import CreateKeyRequest
    from fetchml.services.keys import create_key_op
    from fetchml.services.principal import LOCAL_OPERATOR
    from fetchml.services.uow import run_write

    try:
        req = CreateKeyRequest(user=user, role=Role(role) if role in Role._value2member_map_ else role)  # type: ignore[arg-type]
    except ValidationError as exc:
        fail(f"VALIDATION_ERROR: {exc.errors()[0]['loc'][0]}: {exc.errors()[0]['msg']}", 2)
        return
    created = run_write(_db(data_dir, database_url), create_key_op(req.user, req.role, LOCAL_OPERATOR))
    if as_json:
        print_json(created)
        return
    typer.echo(
        f"Created {created.role.value} key {created.id} for {created.user_id}. It is shown only now:",
        err=True,
    )
    typer.echo(created.key)


@app.command("list")
def list_keys(data_dir: Path = DataDirOpt, database_url: str = DbUrlOpt, as_json: bool = JsonOpt) -> None:
    """List keys (ids, users, roles, prefixes; never the keys)."""
    from fetchml.services.keys import list_keys_query

    db = _db(data_dir, database_url)
    with db.read() as session:
        keys = list_keys_query(session)
    if as_json:
        print_json(keys)
        return
    from rich.table import Table

    table = Table("ID", "USER", "ROLE", "PREFIX", "CREATED", "REVOKED")
    for k in keys:
        table.add_row(
            k.id, k.user_id, k.role.value, k.prefix + "…", fmt_time(k.created_at), fmt_time(k.revoked_at)
        )
    console().print(table)


@app.command("revoke")
def revoke(
    key_id: str = typer.Argument(..., help="Key id (key_...)."),
    data_dir: Path = DataDirOpt,
    database_url: str = DbUrlOpt,
) -> None:
    """Revoke a key. Servers stop accepting it within FETCHML_AUTH_CACHE_SECONDS."""
    from fetchml.core.errors import FetchmlError
    from fetchml.services.keys import revoke_key_op
    from fetchml.services.principal import LOCAL_OPERATOR
    from fetchml.services.uow import run_write

    try:
        info = run_write(_db(data_dir, database_url), revoke_key_op(key_id, LOCAL_OPERATOR))
    except FetchmlError as exc:
        fail(f"{exc.code}: {exc.message}")
        return
    typer.echo(f"Revoked {info.id} ({info.user_id}, {info.role.value})")
