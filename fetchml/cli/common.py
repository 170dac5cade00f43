"""Shared CLI plumbing: one-line errors, JSON output, client construction."""

from __future__ import annotations

import functools
import json
import sys
from collections.abc import Callable
from typing import Any, TypeVar

import typer

F = TypeVar("F", bound=Callable[..., Any])

ServerOpt = typer.Option(
    None,
    "--server",
    envvar="FETCHML_SERVER_URL",
    help="Server URL [default: http://127.0.0.1:9101 or config file].",
    show_envvar=True,
)
ApiKeyOpt = typer.Option(
    None, "--api-key", envvar="FETCHML_API_KEY", help="API key [default: from config file].", show_envvar=True
)
JsonOpt = typer.Option(False, "--json", help="Print JSON only, to stdout.")


def fail(message: str, code: int = 1) -> None:
    # One line on stderr, never a traceback.
    sys.stderr.write(f"error: {message}\n")
    raise typer.Exit(code)


def handle_errors(fn: F) -> F:
    """Turn client-side failures into one line on stderr and a non-zero exit."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        from fetchml.core.errors import FetchmlError

        try:
            return fn(*args, **kwargs)
        except FetchmlError as exc:
            trace = f" (trace {exc.trace_id})" if exc.trace_id else ""
            hint = ""
            if exc.code == "SERVER_UNREACHABLE":
                hint = " — is `fetchml serve` running? Set --server or FETCHML_SERVER_URL."
            elif exc.code == "UNAUTHORIZED":
                hint = " — set --api-key, FETCHML_API_KEY or `fetchml config set api_key KEY`."
            fail(f"{exc.code}: {exc.message}{trace}{hint}", 1)
        except ValueError as exc:
            fail(str(exc), 2)
        except KeyboardInterrupt:
            fail("interrupted", 130)

    return wrapper  # type: ignore[return-value]


def client(server: str | None, api_key: str | None) -> Any:
    from fetchml.client import FetchmlClient, resolve

    return FetchmlClient.from_config(resolve(server, api_key))


def print_json(obj: Any) -> None:
    """Pydantic models, lists of them, or plain data -> JSON on stdout."""
    from pydantic import BaseModel

    def plain(o: Any) -> Any:
        if isinstance(o, BaseModel):
            return o.model_dump(mode="json")
        if isinstance(o, list):
            return [plain(i) for i in o]
        if isinstance(o, dict):
            return {k: plain(v) for k, v in o.items()}
        return o

    sys.stdout.write(json.dumps(plain(obj), indent=2) + "\n")


def console() -> Any:
    from rich.console import Console

    return Console()


def fmt_time(dt: Any) -> str:
    if dt is None:
        return "-"
    return str(dt.astimezone().strftime("%Y-%m-%d %H:%M:%S"))
