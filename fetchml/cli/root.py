"""The Typer app on the command table of fetchml/cli/main.py, each command imported on first use."""

from __future__ import annotations

from typing import Any

import typer
from typer._completion_classes import completion_init
from typer.core import TyperGroup

from fetchml.cli.main import APP_HELP, COMMANDS, INSTALL_COMPLETION_HELP, SHOW_COMPLETION_HELP, Entry


def load(name: str, entry: Entry) -> Any:
    """The click command for one table entry, with its completion callbacks attached."""
    import importlib

    from fetchml.cli.completion import attach

    module, _, attr = entry.target.partition(":")
    target = getattr(importlib.import_module(module), attr)
    if isinstance(target, typer.Typer):
        # Plain help throughout: Typer's Rich help would load rich (and its tables) on every --help.
        target.rich_markup_mode = None
        command: Any = typer.main.get_group(target)
    else:
        single = typer.Typer(rich_markup_mode=None, add_completion=False)
        single.command(name, context_settings=entry.context_settings)(target)
        command = typer.main.get_command(single)
    command.name = name
    _help_defaults(command)
    attach(command, name)
    return command


def _false_default(option: Any) -> Any:
    # Typer 0.2x coerces a flag left at None through pydantic (~40 ms to import); False is a bool
    # already. So `--help` anywhere, and commands without other optional values, skip pydantic.
    if option is not None and option.default is None:
        option.default = False
    return option


def _help_defaults(command: Any) -> None:
    """Every --help in the tree made now (Click makes them on first parse), with a False default."""
    ctx = typer.Context(command, **(command.context_settings or {}))
    _false_default(command.get_help_option(ctx))
    for sub in getattr(command, "commands", {}).values():
        _help_defaults(sub)


class LazyGroup(TyperGroup):
    """The root group: lists the table's commands, imports one only when it is resolved."""

    def list_commands(self, ctx: Any) -> list[str]:
        return list(COMMANDS)

    def get_command(self, ctx: Any, cmd_name: str) -> Any:
        command = self.commands.get(cmd_name)
        if command is None and cmd_name in COMMANDS:
            command = self.commands[cmd_name] = load(cmd_name, COMMANDS[cmd_name])
        return command

    def get_help_option(self, ctx: Any) -> Any:
        return _false_default(super().get_help_option(ctx))

    def format_commands(self, ctx: Any, formatter: Any) -> None:
        # Whole one-liners, wrapped, rather than Click's cut-off ones: --help is where users read them.
        with formatter.section("Commands"):
            formatter.write_dl([(name, entry.help) for name, entry in COMMANDS.items()])

    def shell_complete(self, ctx: Any, incomplete: str) -> list[Any]:
        from typer._click.shell_completion import CompletionItem
        from typer._click.utils import make_default_short_help

        # Short helps: Typer renders zsh/fish helps through Rich, which wraps long ones mid-item.
        names = [
            CompletionItem(n, help=make_default_short_help(e.help, 60))
            for n, e in COMMANDS.items()
            if n.startswith(incomplete)
        ]
        # The root's own options (--help...), without resolving every command.
        return names + list(super(TyperGroup, self).shell_complete(ctx, incomplete))

    def resolve_command(self, ctx: Any, args: list[str]) -> Any:
        from difflib import get_close_matches

        try:
            return super().resolve_command(ctx, args)
        except typer._click.exceptions.UsageError as exc:
            # Typer suggests among loaded commands only; the table knows them all.
            matches = get_close_matches(args[0], list(COMMANDS)) if args else []
            if matches and "Did you mean" not in exc.message:
                suggestions = ", ".join(repr(m) for m in matches)
                exc.message = f"{exc.message.rstrip('.')}. Did you mean {suggestions}?"
            raise


# Typer's completion classes (its scripts call `_FETCHML_COMPLETE=complete_bash`...); Typer
# registers them only when it adds its own completion options, which _root replaces.
completion_init()

app = typer.Typer(
    name="fetchml",
    cls=LazyGroup,
    help=APP_HELP,
    no_args_is_help=True,
    rich_markup_mode=None,
    pretty_exceptions_enable=False,
    # Typer's own completion options default to None, which Typer 0.2x coerces through pydantic on
    # every run; _root declares the same two with a False default.
    add_completion=False,
)


def _install_completion(ctx: typer.Context, param: Any, value: bool) -> None:
    if value and not ctx.resilient_parsing:
        from fetchml.cli.completion import install

        install(None)
        raise typer.Exit()


def _show_completion(ctx: typer.Context, param: Any, value: bool) -> None:
    if value and not ctx.resilient_parsing:
        from fetchml.cli.completion import script

        typer.echo(script(None))
        raise typer.Exit()


@app.callback()
def _root(
    install_completion: bool = typer.Option(
        False,
        "--install-completion",
        is_eager=True,
        expose_value=False,
        callback=_install_completion,
        help=INSTALL_COMPLETION_HELP,
    ),
    show_completion: bool = typer.Option(
        False,
        "--show-completion",
        is_eager=True,
        expose_value=False,
        callback=_show_completion,
        help=SHOW_COMPLETION_HELP,
    ),
) -> None:
    pass


def version() -> None:
    """Print the fetchml version."""
    from fetchml import __version__

    typer.echo(__version__)


__all__ = ["LazyGroup", "app", "load", "version"]
