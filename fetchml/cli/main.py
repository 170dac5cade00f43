"""Entry point. Only typer is imported here; commands import what they need when they run."""

from __future__ import annotations

import typer

from fetchml.cli import (
    audit,
    config,
    experiments,
    jupyter,
    keys,
    plugins,
    queue,
    reserve,
    scheduler,
    tasks,
    workers,
)
from fetchml.cli.artifacts import artifacts
from fetchml.cli.health import health
from fetchml.cli.logs import logs
from fetchml.cli.priority import priority
from fetchml.cli.run import run
from fetchml.cli.serve import serve
from fetchml.cli.tui import tui
from fetchml.cli.watch import watch
from fetchml.cli.worker import worker

app = typer.Typer(
    name="fetchml",
    help=(
        "Run ML experiments on the GPU machines your team already owns. "
        "Server commands take --server and --api-key (or FETCHML_SERVER_URL, FETCHML_API_KEY, "
        "or `fetchml config set`). Exit codes: 0 ok, 1 error from or reaching the server, "
        "2 invalid command line."
    ),
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

app.command("submit")(tasks.submit)
app.command("tasks")(tasks.list_tasks)
app.command("status")(tasks.status)
app.command("cancel")(tasks.cancel)
app.command("priority")(priority)
app.command("queue")(queue.queue)
app.command("logs")(logs)
app.command("watch")(watch)
app.command("tui")(tui)
app.command("artifacts")(artifacts)
app.add_typer(experiments.app, name="experiments")
app.add_typer(audit.app, name="audit")
app.add_typer(config.app, name="config")
app.add_typer(keys.app, name="keys")
app.add_typer(workers.app, name="workers")
app.add_typer(scheduler.app, name="scheduler")
app.add_typer(reserve.app, name="reserve")
app.add_typer(jupyter.app, name="jupyter")
app.add_typer(plugins.app, name="plugins")
app.command("run", context_settings={"allow_interspersed_args": False, "ignore_unknown_options": True})(run)
app.command("serve")(serve)
app.command("worker")(worker)
app.command("health")(health)


@app.command("version")
def version() -> None:
    """Print the fetchml version."""
    from fetchml import __version__

    typer.echo(__version__)


def main() -> None:
    app()
