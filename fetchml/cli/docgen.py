"""The command reference in docs/cli.md, generated from the app itself, so it cannot drift.

`python -m fetchml.cli.docgen --write` rewrites the part of docs/cli.md between the two markers
below: every command and subcommand, with its usage, help, arguments and options (type,
default, environment variable). tests/cli/test_cli_reference.py fails when the file differs
from what this prints. The rest of docs/cli.md (the guide) is written by hand.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

BEGIN = "<!-- BEGIN GENERATED REFERENCE: python -m fetchml.cli.docgen --write -->"
END = "<!-- END GENERATED REFERENCE -->"
DOC = Path(__file__).resolve().parents[2] / "docs" / "cli.md"


def _cell(text: str) -> str:
    return " ".join(text.split()).replace("|", "\\|")


def _walk(command: Any, path: list[str], out: list[str], parent: Any = None) -> None:
    # Typer 0.2x vendors click (typer._click): its own Context, its own parameter classes.
    from typer._click import Context

    ctx = Context(command, info_name=path[-1], parent=parent)
    if path[1:]:  # the root's help is the guide's business
        out += [f"### `{' '.join(path)}`", "", "```text"]
        out.append(" ".join([*path, *command.collect_usage_pieces(ctx)]))
        out += ["```", ""]
        help_text = (command.help or command.short_help or "").strip()
        if help_text:
            out += [_cell(help_text.split("\n\n")[0]), ""]
        rows = []
        for param in command.get_params(ctx):
            if param.name == "help" or getattr(param, "hidden", False):
                continue
            record = param.get_help_record(ctx)
            if param.param_type_name == "argument":
                name = f"`{(param.metavar or param.name or '').upper()}`"
                meaning = (getattr(param, "help", "") or "") + ("" if param.required else " (optional)")
            elif record is not None:
                name, meaning = f"`{record[0]}`", record[1]
            else:
                continue
            rows.append(f"| {_cell(name)} | {_cell(meaning)} |")
        if rows:
            out += ["| argument or option | meaning |", "|---|---|", *rows, ""]
    if hasattr(command, "list_commands"):
        for name in command.list_commands(ctx):
            sub = command.get_command(ctx, name)
            if sub is not None and not getattr(sub, "hidden", False):
                _walk(sub, [*path, name], out, ctx)


def reference() -> str:
    """The generated block, markers included."""
    import typer

    from fetchml.cli.root import app

    out = [BEGIN, "", "## Command reference", ""]
    out.append(
        "Generated from the app (`python -m fetchml.cli.docgen --write`); a test fails when it is stale."
    )
    out.append("")
    _walk(typer.main.get_command(app), ["fetchml"], out)
    out.append(END)
    return "\n".join(out) + "\n"


def render(text: str) -> str:
    """docs/cli.md with its generated block replaced (appended when it has none)."""
    block = reference()
    if BEGIN in text and END in text:
        head, _, rest = text.partition(BEGIN)
        _, _, tail = rest.partition(END)
        return head + block.rstrip("\n") + tail
    return text.rstrip("\n") + "\n\n" + block


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--write", action="store_true", help="rewrite docs/cli.md in place")
    ap.add_argument("--check", action="store_true", help="exit 1 when docs/cli.md is stale")
    args = ap.parse_args(argv)
    from fetchml.cli import helpgen

    current = DOC.read_text()
    wanted = render(current)
    if args.write:
        DOC.write_text(wanted)
        return helpgen.main(["--write"])  # the stored --help texts come from the same app
    if args.check:
        return 0 if wanted == current and helpgen.main(["--check"]) == 0 else 1
    sys.stdout.write(reference())
    return 0


if __name__ == "__main__":
    sys.exit(main())
