"""`fetchml plugins list | show | set | disable | health`: tracking plugins (docs/plugins.md)."""

from __future__ import annotations

import json

import typer

from fetchml.cli.common import (
    ApiKeyOpt,
    JsonOpt,
    ServerOpt,
    client,
    console,
    fail,
    handle_errors,
    print_json,
    table,
    text,
)

app = typer.Typer(
    help="Tracking plugins (mlflow, tensorboard, wandb): list, show, configure (admins), disable, health.",
    no_args_is_help=True,
)

STATUS_STYLES = {"healthy": "green", "unhealthy": "red", "starting": "yellow", "stopped": "dim"}


def _value(raw: str) -> object:
    """key=value: a number or true/false/null as JSON, anything else as a string."""
    try:
        return json.loads(raw) if raw in ("true", "false", "null") or raw.lstrip("-").isdigit() else raw
    except ValueError:
        return raw


@app.command("list")
@handle_errors
def list_plugins(
    server: str | None = ServerOpt, api_key: str | None = ApiKeyOpt, as_json: bool = JsonOpt
) -> None:
    """Every plugin with its mode and last known health (secrets redacted)."""
    with client(server, api_key) as c:
        items = c.plugins.list()
    if as_json:
        print_json(items)
        return
    rows = table(("NAME", {"no_wrap": True}), ("MODE", {}), ("STATUS", {}), ("URL", {"overflow": "fold"}))
    for p in items:
        status = p.status.status or "unchecked"
        rows.add_row(
            text(p.name), text(p.mode), text(status, STATUS_STYLES.get(status, "")), text(p.status.url or "-")
        )
    console().print(rows)


@app.command("show")
@handle_errors
def show(
    name: str = typer.Argument(..., help="mlflow, tensorboard or wandb."),
    server: str | None = ServerOpt,
    api_key: str | None = ApiKeyOpt,
    as_json: bool = JsonOpt,
) -> None:
    """One plugin: mode, health and settings (secrets shown as ***)."""
    with client(server, api_key) as c:
        p = c.plugins.get(name)
    if as_json:
        print_json(p)
        return
    typer.echo(f"{p.name}: {p.mode} ({p.status.status or 'unchecked'})")
    for key, value in sorted((p.config.settings or {}).items()):
        typer.echo(f"  {key} = {value}")


@app.command("set")
@handle_errors
def set_config(
    name: str = typer.Argument(..., help="mlflow, tensorboard or wandb."),
    settings: list[str] = typer.Argument(
        None, metavar="KEY=VALUE...", help="Settings, e.g. tracking_uri=http://mlflow:5000."
    ),
    mode: str = typer.Option("remote", "--mode", help="remote (an existing tracker) or sidecar."),
    server: str | None = ServerOpt,
    api_key: str | None = ApiKeyOpt,
    as_json: bool = JsonOpt,
) -> None:
    """Enable a plugin with these settings (admin keys). Replaces its settings; checked by the
    server, which names a bad field. Secrets are stored and never shown again."""
    from fetchml.core.models import PluginConfig

    values: dict[str, object] = {}
    for item in settings or []:
        key, sep, raw = item.partition("=")
        if not sep or not key:
            fail(f"expected KEY=VALUE, got {item!r}", 2)
        values[key] = _value(raw)
    with client(server, api_key) as c:
        p = c.plugins.configure(name, PluginConfig.model_validate({"mode": mode, "settings": values}))
    if as_json:
        print_json(p)
        return
    typer.echo(f"{p.name}: {p.mode}; check it with: fetchml plugins health {p.name}")


@app.command("disable")
@handle_errors
def disable(
    name: str = typer.Argument(..., help="mlflow, tensorboard or wandb."),
    server: str | None = ServerOpt,
    api_key: str | None = ApiKeyOpt,
) -> None:
    """Disable a plugin (admin keys); its settings are kept for when it is set again."""
    with client(server, api_key) as c:
        c.plugins.disable(name)
    typer.echo(f"{name}: disabled")


@app.command("health")
@handle_errors
def health(
    name: str | None = typer.Argument(None, help="One plugin; default: every enabled one."),
    server: str | None = ServerOpt,
    api_key: str | None = ApiKeyOpt,
    as_json: bool = JsonOpt,
) -> None:
    """Probe plugins now: a remote is healthy when its URL answers within 3 s. Exit 1 when one is not."""
    with client(server, api_key) as c:
        names = [name] if name else [p.name for p in c.plugins.list() if p.enabled]
        results = {n: c.plugins.health(n) for n in names}
    if as_json:
        print_json({n: r.model_dump(mode="json") for n, r in results.items()})
    else:
        for n, r in results.items():
            typer.echo(f"{n}: {r.status}")
        if not results:
            typer.echo("no plugin is enabled")
    if any(r.status != "healthy" for r in results.values()):
        raise typer.Exit(1)
