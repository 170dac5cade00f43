"""Entry point: the table of commands, and `fetchml --help` without loading any of them.

Commands are named here as "module:attr" strings with their one-line help; fetchml/cli/root.py
builds the Typer app on them and imports a command's module only when it is resolved, so each
command pays for typer and its own module, never for the others (httpx, pydantic, rich...).
`fetchml --help` does not even load typer: it is rendered from this table by the same layout
Click uses (tests/cli/test_cli_startup.py checks the table and the output against the app).

Only the standard library's already-loaded modules at the top: this runs on every command.
"""

from __future__ import annotations

import os
import sys


class Entry:
    """One top-level command."""

    __slots__ = ("context_settings", "help", "target")

    def __init__(self, target: str, help: str, context_settings: dict[str, bool] | None = None) -> None:
        self.target = target  # "module:attr": a command function, or a typer.Typer for a group
        self.help = help  # the command's one-line help, as `fetchml --help` lists it
        self.context_settings = context_settings


APP_HELP = (
    "Run ML experiments on the GPU machines your team already owns. "
    "Server commands take --server and --api-key (or FETCHML_SERVER_URL, FETCHML_API_KEY, "
    "or `fetchml config set`). Exit codes: 0 ok, 1 error from or reaching the server, "
    "2 invalid command line, 130 interrupted. --no-color (or NO_COLOR) turns colour off; with "
    "--json, errors too are JSON on stdout."
)
INSTALL_COMPLETION_HELP = "Install completion for the current shell."
SHOW_COMPLETION_HELP = "Show completion for the current shell, to copy it or customize the installation."
HELP_HELP = "Show this message and exit."

# In the order `fetchml --help` lists them.
COMMANDS: dict[str, Entry] = {
    "submit": Entry("fetchml.cli.tasks:submit", "Queue a task."),
    "tasks": Entry("fetchml.cli.tasks:list_tasks", "List tasks, newest first."),
    "status": Entry("fetchml.cli.tasks:status", "Show everything about one task."),
    "cancel": Entry("fetchml.cli.tasks:cancel", "Cancel a task."),
    "priority": Entry(
        "fetchml.cli.priority:priority", "Set a task's priority (your own task, or any with an admin key)."
    ),
    "queue": Entry(
        "fetchml.cli.queue:queue",
        "Show queue statistics: queued and running tasks, tasks ended today, active workers.",
    ),
    "logs": Entry("fetchml.cli.logs:logs", "Print a task's log: every attempt's lines, in order."),
    "watch": Entry("fetchml.cli.watch:watch", "Watch the scheduler live, or one task until it ends."),
    "tui": Entry(
        "fetchml.cli.tui:tui",
        "Open the dashboard: queue, running tasks, workers, reservations and audit, live.",
    ),
    "artifacts": Entry(
        "fetchml.cli.artifacts:artifacts",
        "List a task's artifacts (every attempt, newest first), or download them.",
    ),
    "run": Entry(
        "fetchml.cli.run:run",
        "Run ENTRYPOINT from this folder as a task, stream its output, and bring its artifacts back "
        "into ./fetchml-runs/TASK_ID/ when it ends (--output DIR puts them elsewhere, --no-download "
        "leaves them on the server).",
        {"allow_interspersed_args": False, "ignore_unknown_options": True},
    ),
    "serve": Entry(
        "fetchml.cli.serve:serve",
        "Run the HTTP API server with its lease sweeper and an embedded local worker.",
    ),
    "worker": Entry(
        "fetchml.cli.worker:worker",
        "Register with a server and run its tasks in local Docker (or as local processes).",
    ),
    "health": Entry(
        "fetchml.cli.health:health", "Check that the server answers /health (no API key needed)."
    ),
    "doctor": Entry(
        "fetchml.cli.doctor:doctor",
        "Check the setup (config, key, server, Docker, GPUs, disk, versions) and say how to fix what is wrong.",
    ),
    "completion": Entry(
        "fetchml.cli.completion:completion", "Print the shell completion script for bash, zsh or fish."
    ),
    "version": Entry("fetchml.cli.root:version", "Print the fetchml version."),
    "experiments": Entry(
        "fetchml.cli.experiments:app", "List and create experiments (named groups of runs)."
    ),
    "audit": Entry("fetchml.cli.audit:app", "Query the audit log and verify its hash chain."),
    "config": Entry(
        "fetchml.cli.config:app", "Read and write the client config file (server URL, API key, timeout)."
    ),
    "keys": Entry(
        "fetchml.cli.keys:app", "Create, list and revoke API keys (directly on the server's database)."
    ),
    "workers": Entry(
        "fetchml.cli.workers:app", "List, inspect and drain the workers of a server (admin keys only)."
    ),
    "scheduler": Entry("fetchml.cli.scheduler:app", "The scheduler's state (admin keys only)."),
    "reserve": Entry(
        "fetchml.cli.reservations:app",
        "Reserve free GPUs for later tasks, and list reservations (admin keys only).",
    ),
    "jupyter": Entry(
        "fetchml.cli.jupyter:app", "Start, list, open and stop Jupyter services on the workers."
    ),
    "plugins": Entry(
        "fetchml.cli.plugins:app",
        "Tracking plugins (mlflow, tensorboard, wandb): list, show, configure (admins), disable, health.",
    ),
}

PROG = "fetchml"
COMPLETE_VAR = "_FETCHML_COMPLETE"


# --- `fetchml --help` without typer -------------------------------------------------------
# Click's plain layout (typer/_click/formatting.py HelpFormatter): the same widths, indents and
# wrapping, so the output is byte for byte what the app prints (test_cli_startup.py).


def _width() -> int:
    """Click's HelpFormatter width: the terminal's (COLUMNS first), at most 80, minus 2; 50 at least."""
    try:
        columns = int(os.environ.get("COLUMNS", "0"))
    except ValueError:
        columns = 0
    if columns <= 0:
        try:
            columns = os.get_terminal_size(sys.__stdout__.fileno()).columns  # type: ignore[union-attr]
        except (AttributeError, ValueError, OSError):
            columns = 80
    return max(min(columns or 80, 80) - 2, 50)


def _wrap(text: str, width: int, indent: str = "") -> list[str]:
    import textwrap

    wrapper = textwrap.TextWrapper(
        width, initial_indent=indent, subsequent_indent=indent, replace_whitespace=False
    )
    return wrapper.wrap(text)


def _dl(rows: list[tuple[str, str]], width: int) -> list[str]:
    """Click's write_dl at indent 2: a first column of at most 30, two spaces, wrapped help."""
    first_col = min(max(len(first) for first, _ in rows), 30) + 2
    lines = []
    for first, second in rows:
        text = _wrap(second, max(width - first_col - 2, 10))
        if len(first) <= first_col - 2:
            lines.append(f"  {first}{' ' * (first_col - len(first))}{text[0]}")
        else:
            lines += [f"  {first}", f"{' ' * (first_col + 2)}{text[0]}"]
        lines += [f"{' ' * (first_col + 2)}{line}" for line in text[1:]]
    return lines


def render_help() -> str:
    """`fetchml --help`, as the app renders it."""
    width = _width()
    options = [
        ("--install-completion", INSTALL_COMPLETION_HELP),
        ("--show-completion", SHOW_COMPLETION_HELP),
        ("--help", HELP_HELP),
    ]
    lines = [
        f"Usage: {PROG} [OPTIONS] COMMAND [ARGS]...",  # always fits: the width is 50 at least
        "",
        *_wrap(APP_HELP, width, "  "),
        "",
        "Options:",
        *_dl(options, width),
        "",
        "Commands:",
        *_dl([(name, entry.help) for name, entry in COMMANDS.items()], width),
    ]
    return "\n".join(lines) + "\n"


def __getattr__(name: str) -> object:
    # `from fetchml.cli.main import app` keeps working; the app is built on first use.
    if name == "app":
        from fetchml.cli.root import app

        return app
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def _strip_no_color(args: list[str]) -> list[str]:
    """The line without our --no-color; past `fetchml run`'s script, the script's own arguments
    are passed on untouched."""
    out: list[str] = []
    for i, arg in enumerate(args):
        if out[:1] == ["run"] and any(not a.startswith("-") for a in out[1:]):
            return out + args[i:]
        if arg != "--no-color":
            out.append(arg)
    return out


def main() -> None:
    # --no-color anywhere on the line: as NO_COLOR (https://no-color.org), which Rich and our own
    # output already honour, for every command.
    if "--no-color" in sys.argv[1:]:
        sys.argv = [sys.argv[0], *_strip_no_color(sys.argv[1:])]
        os.environ["NO_COLOR"] = "1"
    args = sys.argv[1:]
    if args == ["--help"] and COMPLETE_VAR not in os.environ:
        sys.stdout.write(render_help())
        return
    # Click spells the instruction `bash_complete`, Typer `complete_bash`: accept both.
    shell, sep, instruction = os.environ.get(COMPLETE_VAR, "").partition("_")
    if sep and instruction in ("complete", "source"):
        os.environ[COMPLETE_VAR] = f"{instruction}_{shell}"
    elif COMPLETE_VAR not in os.environ:
        from fetchml.cli.fast import attempt

        if attempt(args):
            return
    from fetchml.cli.root import app

    # prog_name: under `python -m fetchml` Click would call the program "python -m fetchml", and
    # look for the completion variable under that name.
    app(prog_name=PROG, complete_var=COMPLETE_VAR)
