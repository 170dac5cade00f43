"""`fetchml config`: the client's config file (server URL, API key, timeout)."""

from __future__ import annotations

import typer

from fetchml.cli.common import (
    EXIT_ERROR,
    EXIT_USAGE,
    JsonOpt,
    console,
    fail,
    handle_errors,
    print_json,
    table,
    text,
)

app = typer.Typer(
    short_help="Read and write the client config file (server URL, API key, timeout).",
    help=(
        "Read and write the client config file. Keys: server_url, api_key, timeout. "
        "The file is FETCHML_CONFIG if set, else config.toml in the user config directory. "
        "Precedence: --server/--api-key flag > FETCHML_SERVER_URL/FETCHML_API_KEY/FETCHML_TIMEOUT "
        "> config file > default."
    ),
    no_args_is_help=True,
)

KEY_HELP = "One of: server_url, api_key, timeout."


def _check_key(key: str) -> None:
    from fetchml.client.config import CONFIG_KEYS

    if key not in CONFIG_KEYS:
        fail(f"unknown config key {key!r}; known keys: {', '.join(CONFIG_KEYS)}", EXIT_USAGE)


@app.command("set")
@handle_errors
def set_value(
    key: str = typer.Argument(..., help=KEY_HELP),
    value: str = typer.Argument(
        ...,
        help="New value: timeout in seconds, server_url as http(s)://HOST:PORT. "
        "'-' reads it from stdin (keeps a key out of shell history).",
    ),
) -> None:
    """Store a value in the config file (created with mode 0600, as it may hold a key)."""
    import sys

    from fetchml.client.config import save_value

    _check_key(key)
    if value == "-":
        value = sys.stdin.readline().strip()
    path = save_value(key, value)
    typer.echo(f"Set {key} in {path}")


@app.command("get")
@handle_errors
def get_value(key: str = typer.Argument(..., help=KEY_HELP)) -> None:
    """Print a value stored in the config file (unmasked). Exits 1 when the key is not set there."""
    from fetchml.client.config import config_path, load_file

    _check_key(key)
    path = config_path()
    value = load_file(path).get(key)
    if value is None:
        fail(f"{key} is not set in {path}", EXIT_ERROR)
    typer.echo(str(value))


@app.command("unset")
@handle_errors
def unset_value(key: str = typer.Argument(..., help=KEY_HELP)) -> None:
    """Remove a value from the config file (succeeds if it was not set)."""
    from fetchml.client.config import config_path, load_file, save_value

    _check_key(key)
    path = config_path()
    if key not in load_file(path):
        typer.echo(f"{key} was not set in {path}")
        return
    save_value(key, None, path)
    typer.echo(f"Unset {key} in {path}")


@app.command("show")
@handle_errors
def show(as_json: bool = JsonOpt) -> None:
    """Show the settings in effect and where each comes from (env, file or default).

    The API key is masked: only its first 12 characters are shown.
    """
    from fetchml.client.config import config_path, explain, mask_secret

    path = config_path()
    settings = explain()
    rows = []
    for key, setting in settings.items():
        value = setting.value
        if key == "api_key" and isinstance(value, str):
            value = mask_secret(value)
        rows.append((key, value, setting.source))
    if as_json:
        print_json(
            {
                "path": str(path),
                "exists": path.exists(),
                "settings": {key: {"value": value, "source": source} for key, value, source in rows},
            }
        )
        return
    out = console()
    out.print(text(f"config file: {path}" + ("" if path.exists() else " (does not exist)")), soft_wrap=True)
    shown = table(("KEY", {"no_wrap": True}), ("VALUE", {"overflow": "fold"}), ("SOURCE", {"no_wrap": True}))
    for key, value, source in rows:
        shown.add_row(key, text("(not set)" if value is None else value), source)
    out.print(shown)


@app.command("path")
def path() -> None:
    """Print the config file's path (FETCHML_CONFIG, else the user config directory)."""
    from fetchml.client.config import config_path

    typer.echo(str(config_path()))
