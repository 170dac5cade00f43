"""Command line. Module tops import only typer: heavy libraries load inside commands.

`fetchml.cli.app` (the Typer app) is built on first use: the entry point (fetchml.cli.main)
renders `fetchml --help` without loading typer at all.
"""

from __future__ import annotations


def __getattr__(name: str) -> object:
    if name == "app":
        from fetchml.cli.root import app

        return app
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = ["app"]
