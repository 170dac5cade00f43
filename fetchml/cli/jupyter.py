"""`fetchml jupyter start | list | show | stop | open`: Jupyter services on a server's workers."""

from __future__ import annotations

import contextlib
import sys
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, NoReturn

import typer

from fetchml.cli.common import (
    ApiKeyOpt,
    JsonOpt,
    ServerOpt,
    client,
    console,
    fail,
    fmt_time,
    handle_errors,
    kv_table,
    print_json,
    table,
    text,
)
from fetchml.cli.durations import format_minutes, parse_minutes, time_option

if TYPE_CHECKING:
    from fetchml.client import FetchmlClient
    from fetchml.core.errors import FetchmlError
    from fetchml.core.jupyter import JupyterService

app = typer.Typer(help="Start, list, open and stop Jupyter services on the workers.", no_args_is_help=True)

POLL = 0.5  # seconds between reads while waiting
SERVICE_STYLES = {
    "starting": "yellow",
    "running": "green",
    "stopping": "cyan",
    "stopped": "dim",
    "error": "red",
}
ServiceIdArg = typer.Argument(..., help="Service id, as printed by `fetchml jupyter start` or `list`.")

# What a refused stop or open means for a service, said once here for every command.
_HINTS = {
    "NOT_FOUND": "`fetchml jupyter list --all` lists the services you may see",
    "FORBIDDEN": "only its owner or an admin may do that",
    "CONFLICT": "`fetchml jupyter show {id}` says how it stands",
}


def _refused(exc: FetchmlError, service_id: str) -> NoReturn:
    """The client's domain error as one line with a hint on what to do instead."""
    trace = f" (trace {exc.trace_id})" if exc.trace_id else ""
    hint = _HINTS.get(exc.code, "")
    fail(f"{exc.code}: {exc.message}{trace}" + (f" — {hint.format(id=service_id)}" if hint else ""))


def _call(service_id: str, fn: Callable[[], Any]) -> Any:
    from fetchml.core.errors import ConflictError, ForbiddenError, NotFoundError

    try:
        return fn()
    except (NotFoundError, ForbiddenError, ConflictError) as exc:
        _refused(exc, service_id)


def _age(svc: JupyterService) -> str:
    """3s, 4m05s, 2h07m, 3d04h since it was created (or how long it ran, once ended)."""
    from datetime import UTC, datetime

    end = svc.ended_at or datetime.now(UTC)
    s = max(0, int((end - svc.created_at).total_seconds()))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    if s < 86400:
        return f"{s // 3600}h{s % 3600 // 60:02d}m"
    return f"{s // 86400}d{s % 86400 // 3600:02d}h"


def _gpus(svc: JupyterService) -> str:
    if svc.gpus:
        return ",".join(map(str, svc.gpus))
    if svc.gpu:
        return f"{svc.gpu}" + (f" x {svc.gpu_type}" if svc.gpu_type else "")
    return "-"


def _resources(svc: JupyterService) -> str:
    parts = []
    if svc.gpu:
        parts.append(f"gpu {svc.gpu}" + (f" x {svc.gpu_type}" if svc.gpu_type else ""))
    if svc.cpu:
        parts.append(f"cpu {svc.cpu}")
    if svc.memory_gb:
        parts.append(f"memory {svc.memory_gb} GB")
    return ", ".join(parts) or "-"


def _status(svc: JupyterService) -> Any:
    return text(svc.status.value, SERVICE_STYLES.get(svc.status.value, ""))


def _proxy_url(c: FetchmlClient, svc: JupyterService) -> str:
    return c.server_url.rstrip("/") + svc.proxy_path


def _note(message: str) -> None:
    sys.stderr.write(f"fetchml: {message}\n")


def _wait(
    c: FetchmlClient, svc: JupyterService, until: Callable[[JupyterService], bool], timeout: float, label: str
) -> tuple[JupyterService, bool]:
    """Read the service every POLL seconds until `until(svc)` or `timeout`: (last read, reached).

    A spinner on stderr shows its status when stderr is a terminal; otherwise each change of
    status or pending reason is one line there, so a log of the command shows the wait."""
    err = console(stderr=True)
    deadline = time.monotonic() + timeout

    def line(s: JupyterService) -> str:
        why = f": {s.pending_reason}" if s.pending_reason else ""
        where = f" on {s.worker_id}" if s.worker_id else ""
        return f"{label} {s.id} ({s.name}): {s.status.value}{where}{why}"

    last = ""
    with (
        err.status(text(line(svc)), spinner="dots")
        if err.is_terminal
        else contextlib.nullcontext() as spinner
    ):
        while not until(svc):
            now = line(svc)
            if spinner is not None:
                spinner.update(text(now))
            elif now != last:
                _note(now)
            last = now
            left = deadline - time.monotonic()
            if left <= 0:
                return svc, False
            time.sleep(min(POLL, left))
            svc = c.jupyter.get(svc.id)
    return svc, True


def _service_kw(**values: Any) -> dict[str, Any]:
    return {k: v for k, v in values.items() if v is not None}


@app.command("start")
@handle_errors
def start(
    name: str = typer.Argument(..., help="Service name: letters, digits, _ and -, at most 64 characters."),
    gpu: int | None = typer.Option(None, "--gpu", metavar="N", help="GPUs (default 0)."),
    gpu_type: str | None = typer.Option(
        None, "--gpu-type", metavar="T", help="Required GPU type, e.g. A100."
    ),
    cpu: int | None = typer.Option(None, "--cpu", metavar="N", help="CPU cores requested."),
    memory_gb: int | None = typer.Option(None, "--memory-gb", metavar="N", help="Memory requested, in GB."),
    image: str | None = typer.Option(
        None, "--image", metavar="IMG", help="Container image (default jupyter/pytorch:latest)."
    ),
    workspace: str | None = typer.Option(
        None, "--workspace", metavar="W", help="Your folder on the worker, kept after a stop (default: NAME)."
    ),
    idle_timeout: int | None = typer.Option(
        None,
        "--idle-timeout",
        metavar="MINUTES",
        help="Stop it after this long unused; 0 never (default: the server's).",
    ),
    time_limit: str | None = time_option("service", "none"),
    no_wait: bool = typer.Option(False, "--no-wait", help="Print the service as created and return."),
    timeout: float = typer.Option(
        600, "--timeout", min=0, metavar="S", help="Seconds to wait for it to run."
    ),
    server: str | None = ServerOpt,
    api_key: str | None = ApiKeyOpt,
    as_json: bool = JsonOpt,
) -> None:
    """Start a Jupyter server on a worker and wait until it runs; then print its URL and token.

    Examples:

      fetchml jupyter start scratch --gpu 1
      fetchml jupyter start big --gpu 4 --gpu-type A100 --memory-gb 128 --idle-timeout 60
      fetchml jupyter start demo --time 8h
    """
    from fetchml.core.jupyter import JupyterStatus, StartJupyterRequest

    # Checked here first: a bad name or value fails in one line, exit 2, without a round trip.
    minutes = parse_minutes(time_limit) if time_limit is not None else None
    request = StartJupyterRequest.model_validate(
        _service_kw(name=name, gpu=gpu, gpu_type=gpu_type, cpu=cpu, memory_gb=memory_gb, image=image,
                    workspace=workspace, idle_timeout_minutes=idle_timeout, time_limit_minutes=minutes)
    )  # fmt: skip
    with client(server, api_key) as c:
        svc = c.jupyter.start(request)
        if no_wait:
            if as_json:
                print_json(svc)
            else:
                typer.echo(
                    f"Starting service {svc.id} ({svc.name}); `fetchml jupyter show {svc.id}` follows it"
                )
            return
        try:
            svc, reached = _wait(c, svc, lambda s: s.status != JupyterStatus.STARTING, timeout, "service")
        except KeyboardInterrupt:
            fail(
                f"interrupted; service {svc.id} goes on starting: `fetchml jupyter stop {svc.id}` stops it",
                130,
            )
        proxy = _proxy_url(c, svc)
    if as_json:
        print_json(svc)
    if not reached:
        why = f" ({svc.pending_reason})" if svc.pending_reason else ""
        _note(f"service {svc.id} is still starting after {timeout:g}s{why}")
        _note(f"`fetchml jupyter show {svc.id}` checks on it; `fetchml jupyter stop {svc.id}` stops it")
        raise typer.Exit(1)
    if svc.status != JupyterStatus.RUNNING:
        _report_end(svc)
        raise typer.Exit(1)
    if not as_json:
        _print_running(svc, proxy)


def _report_end(svc: JupyterService) -> None:
    """Why a service ended before it ran: its error and the last lines of its log, on stderr."""
    if svc.status.value == "error":
        sys.stderr.write(f"error: service {svc.id} ({svc.name}) failed: {svc.error or 'no reason given'}\n")
    else:
        reason = f" ({svc.stop_reason})" if svc.stop_reason else ""
        sys.stderr.write(
            f"error: service {svc.id} ({svc.name}) is {svc.status.value}{reason} before it ran\n"
        )
    if svc.log_tail:
        sys.stderr.write("its last log lines:\n")
        for line in svc.log_tail:
            sys.stderr.write(f"  {line}\n")


def _print_running(svc: JupyterService, proxy: str) -> None:
    where = f" on {svc.worker_id}" if svc.worker_id else ""
    gpus = f" (GPUs {','.join(map(str, svc.gpus))})" if svc.gpus else ""
    typer.echo(f"Service {svc.id} ({svc.name}) is running{where}{gpus}")
    typer.echo(f"  url:    {svc.url or '-'}")
    typer.echo(f"  token:  {svc.token or '-'}")
    typer.echo(f"  proxy:  {proxy} (with your API key)")
    typer.echo(f"Open it from here through the server: fetchml jupyter open {svc.id}")


@app.command("list")
@handle_errors
def list_services(
    all_: bool = typer.Option(False, "--all", help="Include stopped and failed services."),
    server: str | None = ServerOpt,
    api_key: str | None = ApiKeyOpt,
    as_json: bool = JsonOpt,
) -> None:
    """List Jupyter services, newest first: yours, or everyone's with an admin key."""
    from fetchml.core.jupyter import LIVE_JUPYTER

    with client(server, api_key) as c:
        items = c.jupyter.list()
    if not all_:
        items = [s for s in items if s.status in LIVE_JUPYTER]
    items.sort(key=lambda s: s.created_at, reverse=True)
    if as_json:
        print_json(items)
        return
    rows = table(
        ("ID", {"no_wrap": True}),
        ("NAME", {"overflow": "fold", "min_width": 6}),
        ("USER", {"overflow": "fold", "min_width": 5}),
        ("STATUS", {"overflow": "fold", "min_width": 6}),
        ("WORKER", {"overflow": "fold", "min_width": 6}),
        ("GPUS", {"overflow": "fold", "min_width": 4}),
        ("AGE", {"justify": "right", "no_wrap": True}),
        ("URL / WHY", {"overflow": "fold", "min_width": 10}),
    )
    for s in items:
        note = s.url or s.error or s.pending_reason or s.stop_reason or ""
        rows.add_row(
            text(s.id), text(s.name), text(s.user_id), _status(s), text(s.worker_id or "-"),
            text(_gpus(s)), text(_age(s)), text(note, "" if s.url else "red" if s.error else "dim"),
        )  # fmt: skip
    out = console()
    out.print(rows)
    out.print(text(f"{len(items)} service(s)" + ("" if all_ else "; --all adds ended ones")))


@app.command("show")
@handle_errors
def show(
    service_id: str = ServiceIdArg,
    server: str | None = ServerOpt,
    api_key: str | None = ApiKeyOpt,
    as_json: bool = JsonOpt,
) -> None:
    """Show everything about one service, its error and last log lines included."""
    with client(server, api_key) as c:
        s: JupyterService = _call(service_id, lambda: c.jupyter.get(service_id))
        proxy = _proxy_url(c, s)
    if as_json:
        print_json(s)
        return
    from rich.panel import Panel

    idle = f"{s.idle_timeout_minutes} min" if s.idle_timeout_minutes else "never"
    rows: list[tuple[str, Any]] = [
        ("id", s.id),
        ("name", s.name),
        ("status", _status(s)),
        ("user", s.user_id),
        ("workspace", s.workspace),
        ("image", s.image),
        ("resources", _resources(s)),
        ("idle stop", idle),
        ("time limit", format_minutes(s.time_limit_minutes) if s.time_limit_minutes else "none"),
        ("worker", s.worker_id or "-"),
        ("gpus", ",".join(map(str, s.gpus)) or "-"),
        ("url", s.url or "-"),
        ("token", s.token or "-"),
        ("proxy", proxy),
        ("created", fmt_time(s.created_at)),
        ("started", fmt_time(s.started_at)),
        ("last activity", fmt_time(s.last_activity)),
        ("ended", fmt_time(s.ended_at)),
    ]
    if s.stop_reason:
        rows.append(("stop reason", s.stop_reason))
    if s.pending_reason:
        rows.append(("pending", text(s.pending_reason, "yellow")))
    if s.error:
        rows.append(("error", text(s.error, "red")))
    for line in s.log_tail:
        rows.append(("log", text(line, "dim")))
    console().print(
        Panel(kv_table(rows), title=text(f"Jupyter service {s.id}"), title_align="left", expand=False)
    )


@app.command("stop")
@handle_errors
def stop(
    service_id: str = ServiceIdArg,
    wait: bool = typer.Option(False, "--wait", help="Return once it has stopped."),
    timeout: float = typer.Option(120, "--timeout", min=0, metavar="S", help="Seconds --wait waits."),
    server: str | None = ServerOpt,
    api_key: str | None = ApiKeyOpt,
) -> None:
    """Stop a service (your own, or any with an admin key). Its workspace stays on the worker."""
    from fetchml.core.jupyter import ENDED_JUPYTER

    with client(server, api_key) as c:
        _call(service_id, lambda: c.jupyter.stop(service_id))
        if not wait:
            typer.echo(f"Stopping {service_id}")
            return
        svc: JupyterService = _call(service_id, lambda: c.jupyter.get(service_id))
        svc, reached = _wait(c, svc, lambda s: s.status in ENDED_JUPYTER, timeout, "stopping")
    if not reached:
        _note(f"service {service_id} is still {svc.status.value} after {timeout:g}s")
        raise typer.Exit(1)
    typer.echo(f"Stopped {service_id}" + (f" ({svc.status.value}: {svc.error})" if svc.error else ""))


@app.command("open")
@handle_errors
def open_service(
    service_id: str = ServiceIdArg,
    port: int = typer.Option(
        0, "--port", min=0, max=65535, metavar="P", help="Local port (default: any free one)."
    ),
    no_browser: bool = typer.Option(False, "--no-browser", help="Only print the local URL."),
    server: str | None = ServerOpt,
    api_key: str | None = ApiKeyOpt,
) -> None:
    """Open a running service in a browser, through a local port forwarded by the server.

    Your API key stays in this process; the browser talks to 127.0.0.1 only. Ctrl-C stops the
    forward, not the service."""
    from fetchml.client import resolve
    from fetchml.core.jupyter import JupyterStatus

    cfg = resolve(server, api_key)
    with client(cfg.server_url, cfg.api_key) as c:
        svc: JupyterService = _call(service_id, lambda: c.jupyter.get(service_id))
    if svc.status != JupyterStatus.RUNNING:
        fail(
            f"CONFLICT: service {svc.id} is {svc.status.value}, not running — `fetchml jupyter show {svc.id}` says why"
        )

    from fetchml.cli.jupyter_forward import run_forward

    # No token in the URL: the server's proxy adds it upstream (and drops one a URL carries).
    def ready(url: str) -> None:
        typer.echo(f"Service {svc.id} ({svc.name}) at {url}")
        typer.echo("Ctrl-C stops the forward (the service goes on; `fetchml jupyter stop` stops it)")
        if not no_browser:
            import webbrowser

            webbrowser.open(url)

    with contextlib.suppress(KeyboardInterrupt):  # Ctrl-C ends the forward, and only that
        # The read above needed a key (a 401 ends the command there), so there is one.
        run_forward(cfg.server_url, cfg.api_key or "", svc.id, port=port, on_ready=ready)
    _note("forward stopped")
