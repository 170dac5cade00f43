"""How `fetchml jupyter` shows a service: its status colours, age, GPUs and resources, and the
lines printed once it runs or ends before it ran."""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING, Any

import typer

from fetchml.cli.common import text

if TYPE_CHECKING:
    from fetchml.core.jupyter import JupyterService

SERVICE_STYLES = {
    "starting": "yellow",
    "running": "green",
    "stopping": "cyan",
    "stopped": "dim",
    "error": "red",
}


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


def _note(message: str) -> None:
    sys.stderr.write(f"fetchml: {message}\n")


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
