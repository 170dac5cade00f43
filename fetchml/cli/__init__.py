"""Command line. Module tops import only typer: heavy libraries load inside commands."""

from fetchml.cli.main import app

__all__ = ["app"]
