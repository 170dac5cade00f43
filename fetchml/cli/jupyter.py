"""`fetchml jupyter start | list | show | stop | open`: Jupyter services on a server's workers.

The commands live here; cli/jupyter_calls.py holds the server calls they share (refusals, waiting),
cli/jupyter_render.py how a service is shown, cli/jupyter_forward.py the local forward of `open`.
"""

from __future__ import annotations

import contextlib
from typing import TYPE_CHECKING, Any

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
from fetchml.cli.jupyter_calls import POLL, _call, _proxy_url, _service_kw, _wait
from fetchml.cli.jupyter_render import (
    SERVICE_STYLES,
    _age,
    _gpus,
    _note,
    _print_running,
    _report_end,
    _resources,
    _status,
)

if TYPE_CHECKING:
    from fetchml.core.jupyter import JupyterService

__all__ = [
    "POLL",
    "SERVICE_STYLES",
    "ServiceIdArg",
    "app",
    "list_services",
    "open_service",
    "show",
    "start",
    "stop",
]

app = typer.Typer(help="Start, list, open and stop Jupyter services on the workers.", no_args_is_help=True)

ServiceIdArg = typer.Argument(..., help="Service id, as printed by `fetchml jupyter start` or `list`.")


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
