"""Shared CLI plumbing: one-line errors, JSON output, client construction, Rich helpers.

Only stdlib and typer at the top: this module is imported by every command module, and
`fetchml --help` must not pay for httpx, pydantic or rich.
"""

from __future__ import annotations

import functools
import json
import os
import sys
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, NoReturn, ParamSpec, TypeVar

import typer

from fetchml.cli.tasklist import STATUS_STYLES as STATUS_STYLES  # one palette for every status

if TYPE_CHECKING:
    from datetime import datetime

    from rich.console import Console

    from fetchml.client import FetchmlClient

P = ParamSpec("P")
R = TypeVar("R")

# Exit codes (documented in docs/cli.md).
EXIT_ERROR = 1  # the server refused the request, could not be reached, or a check failed
EXIT_USAGE = 2  # the command line was invalid; nothing was sent

# No square brackets in help texts: Typer renders them as Rich markup and drops them.
ServerOpt = typer.Option(
    None,
    "--server",
    envvar="FETCHML_SERVER_URL",
    help="Server URL (default: the config file's server_url, else http://127.0.0.1:9101).",
    show_envvar=True,
    metavar="URL",
)
ApiKeyOpt = typer.Option(
    None,
    "--api-key",
    envvar="FETCHML_API_KEY",
    help="API key sent as X-API-Key (default: the config file's api_key).",
    show_envvar=True,
    metavar="KEY",
)
JsonOpt = typer.Option(False, "--json", help="Print only JSON, to stdout (for scripts).")


def fail(message: str, code: int = EXIT_ERROR) -> NoReturn:
    """One line on stderr, never a traceback, then exit with `code`."""
    sys.stderr.write("error: " + " ".join(message.split()) + "\n")
    raise typer.Exit(code)


def fail_json(message: str, error_code: str, trace_id: str | None, code: int) -> NoReturn:
    """With --json: the error as the API's envelope on stdout (scripts never parse prose), and
    the usual line on stderr."""
    body: dict[str, Any] = {"error": " ".join(message.split()), "code": error_code}
    if trace_id:
        body["trace_id"] = trace_id
    sys.stdout.write(json.dumps(body, ensure_ascii=False) + "\n")
    fail(f"{error_code}: {message}", code)


def _one_line_validation(exc: Any) -> str:
    """A pydantic ValidationError as `field: problem; field: problem`."""
    parts = []
    for err in exc.errors():
        loc = ".".join(str(p) for p in err.get("loc", ()))
        msg = str(err.get("msg", "invalid value"))
        parts.append(f"{loc}: {msg}" if loc else msg)
    return "; ".join(parts) or "invalid value"


_HINTS = {
    "SERVER_UNREACHABLE": " — no server answers there: `fetchml serve` starts one, with the history of "
    "your local runs (kept in {data_dir}); or set --server or FETCHML_SERVER_URL.",
    "SERVER_TIMEOUT": " — the server is up but busy; FETCHML_TIMEOUT sets how long to wait.",
    "UNAUTHORIZED": " — set --api-key, FETCHML_API_KEY or `fetchml config set api_key KEY`.",
}


def _local_data_dir() -> str:
    """Where `fetchml serve` and an embedded `fetchml run` keep their data by default."""
    from fetchml.host.settings import default_data_dir

    return os.environ.get("FETCHML_DATA_DIR") or str(default_data_dir())


def handle_errors(fn: Callable[P, R]) -> Callable[P, R]:
    """Turn every failure into one line on stderr and a non-zero exit.

    Errors from (or about) the server exit 1 as `error: CODE: message (trace ...)`; invalid
    input caught before anything is sent exits 2. FETCHML_DEBUG=1 re-raises unexpected
    exceptions with their traceback.
    """

    @functools.wraps(fn)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        from fetchml.core.errors import FetchmlError, RateLimitedError

        as_json = bool(kwargs.get("as_json"))

        def failed(message: str, error_code: str, code: int, trace_id: str | None = None) -> NoReturn:
            if as_json:
                fail_json(message, error_code, trace_id, code)
            fail(f"{error_code}: {message}" if error_code != "USAGE" else message, code)

        try:
            return fn(*args, **kwargs)
        except (typer.Exit, typer.Abort, SystemExit):
            raise
        except FetchmlError as exc:
            trace = f" (trace {exc.trace_id})" if exc.trace_id else ""
            hint = _HINTS.get(exc.code, "")
            if exc.code == "SERVER_UNREACHABLE":
                hint = hint.format(data_dir=_local_data_dir())
            if isinstance(exc, RateLimitedError):
                hint = f" — retry in {exc.retry_after}s."
            if as_json:
                fail_json(f"{exc.message}{hint}", exc.code, exc.trace_id, EXIT_ERROR)
            fail(f"{exc.code}: {exc.message}{trace}{hint}", EXIT_ERROR)
        except ValueError as exc:
            from pydantic import ValidationError

            if isinstance(exc, ValidationError):
                failed(_one_line_validation(exc), "VALIDATION_ERROR", EXIT_USAGE)
            failed(str(exc), "USAGE", EXIT_USAGE)
        except OSError as exc:
            failed(f"{type(exc).__name__}: {exc}", "IO_ERROR", EXIT_ERROR)
        except KeyboardInterrupt:
            failed("interrupted", "INTERRUPTED", 130)
        except Exception as exc:
            import click

            if isinstance(exc, click.ClickException) or os.environ.get("FETCHML_DEBUG"):
                raise
            failed(
                f"unexpected {type(exc).__name__}: {exc} (FETCHML_DEBUG=1 shows a traceback)",
                "INTERNAL_ERROR",
                1,
            )

    return wrapper


def client(server: str | None, api_key: str | None) -> FetchmlClient:
    from fetchml.client import FetchmlClient, resolve

    return FetchmlClient.from_config(resolve(server, api_key))


def plain(obj: Any) -> Any:
    """Pydantic models, lists and dicts of them -> JSON-ready data; absent values are left out,
    as the server leaves them out (never null)."""
    from pydantic import BaseModel

    if isinstance(obj, BaseModel):
        return obj.model_dump(mode="json", exclude_none=True)
    if isinstance(obj, list | tuple):
        return [plain(i) for i in obj]
    if isinstance(obj, dict):
        return {k: plain(v) for k, v in obj.items()}
    return obj


def print_json(obj: Any) -> None:
    """JSON on stdout, and nothing else."""
    sys.stdout.write(json.dumps(plain(obj), indent=2, ensure_ascii=False) + "\n")


def console(stderr: bool = False) -> Console:
    """A Rich console. Piped (not a terminal, no COLUMNS): wide, so rows never wrap for grep/awk."""
    from rich.console import Console

    out = Console(stderr=stderr, highlight=False)
    if not out.is_terminal and not os.environ.get("COLUMNS"):
        out = Console(stderr=stderr, highlight=False, width=PIPE_WIDTH)
    return out


PIPE_WIDTH = 400


def table(*columns: tuple[str, dict[str, Any]]) -> Any:
    """A compact table (header rule, no frame, 2 spaces between columns): (header, Column options).

    Give ids `no_wrap` and everything else room to fold, so an 80-column terminal still shows
    every column and whole ids (which users copy).
    """
    from rich import box
    from rich.table import Table

    t = Table(box=box.SIMPLE_HEAD, show_edge=False, header_style="bold", padding=(0, 1, 0, 0))
    for header, options in columns:
        t.add_column(header, **options)
    return t


def fmt_time(dt: datetime | None, seconds: bool = True) -> str:
    """Local time (to the second, or the minute for tables); `-` for none."""
    if dt is None:
        return "-"
    return str(dt.astimezone().strftime("%Y-%m-%d %H:%M:%S" if seconds else "%Y-%m-%d %H:%M"))


def text(value: Any, style: str = "") -> Any:
    """A Rich Text: user data is never parsed as markup (a `[red]` in an error stays literal)."""
    from rich.text import Text

    return Text("-" if value is None else str(value), style=style)


def kv_table(rows: list[tuple[str, Any]], title: str | None = None) -> Any:
    """Two-column key/value table, no header: for one object's details."""
    from rich.table import Table

    table = Table(show_header=False, box=None, pad_edge=False, title=title, title_justify="left")
    table.add_column(style="bold", no_wrap=True)
    table.add_column(overflow="fold")
    for key, value in rows:
        table.add_row(key, value if not isinstance(value, str | int | float) else text(value))
    return table
