"""Entry point. Only typer is imported here; commands import what they need when they run."""

from __future__ import annotations

import typer

from fetchml.cli import keys
from fetchml.cli.serve import serve

app = typer.Typer(
    name="fetchml",
    help="Run ML experiments on the GPU machines your team already owns.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

app.command("serve")(serve)
app.add_typer(keys.app, name="keys")


@app.command("version")
def version() -> None:
    """Print the fetchml version."""
    from fetchml import __version__

    typer.echo(__version__)


def main() -> None:
    app()
