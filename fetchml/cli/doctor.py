"""`fetchml doctor`: check the whole setup at once, and say how to fix each problem.

The checks themselves are in doctor_checks.py. Exit 1 when something blocks use (no server, a
refused key, a broken config); warnings alone exit 0.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import typer

from fetchml.cli.common import EXIT_ERROR, ApiKeyOpt, JsonOpt, ServerOpt

if TYPE_CHECKING:
    from fetchml.cli.doctor_checks import Check

LABELS = {"ok": "ok", "warn": "warn", "fail": "FAIL", "skip": "skip"}
COLORS = {"ok": "green", "warn": "yellow", "fail": "red", "skip": "bright_black"}


_ENVIRONMENT = typer._click.core.ParameterSource.ENVIRONMENT


def _default_work_dir() -> Path:
    """Where `fetchml worker` keeps caches and workspaces by default."""
    import socket

    import platformdirs

    name = socket.gethostname().split(".")[0]
    return Path(platformdirs.user_cache_dir("fetchml", appauthor=False)) / f"worker-{name}"


def doctor(
    ctx: typer.Context,
    server: str | None = ServerOpt,
    api_key: str | None = ApiKeyOpt,
    data_dir: Path | None = typer.Option(
        None,
        "--data-dir",
        envvar="FETCHML_DATA_DIR",
        metavar="DIR",
        help="The server's data folder, whose free space is checked (default: the user data dir, as fetchml serve).",
    ),
    work_dir: Path | None = typer.Option(
        None,
        "--work-dir",
        metavar="DIR",
        help="The worker's work folder, whose free space is checked (default: fetchml worker's).",
    ),
    dataset_root: list[Path] | None = typer.Option(
        None,
        "--dataset-root",
        envvar="FETCHML_DATASET_ROOTS",
        metavar="DIR",
        help="A dataset root the worker is given, checked to exist and be readable (repeatable).",
    ),
    min_free_gb: float = typer.Option(
        1.0, "--min-free-gb", min=0, metavar="GB", help="Warn when a folder's disk has less free (GiB)."
    ),
    min_free_percent: float = typer.Option(
        5.0,
        "--min-free-percent",
        min=0,
        max=100,
        metavar="P",
        help="Warn when a folder's disk has less free (%).",
    ),
    as_json: bool = JsonOpt,
) -> None:
    """Check the setup (config, key, server, Docker, GPUs, disk, versions) and say how to fix what is wrong.

    Client side: the config and key, the server (reachable, healthy, its version), the key's role,
    and the versions of client, server and (with an admin key) workers. This machine as a worker
    host: the Docker daemon and its nvidia runtime, the GPUs NVML sees, the dataset roots, and the
    free space in the data and work folders. Exit 1 when something blocks use (no server, a refused
    key, a broken config); warnings alone exit 0.
    """
    from fetchml import __version__
    from fetchml.cli import doctor_checks as dc
    from fetchml.host.settings import default_data_dir

    # Values Click took from FETCHML_* are left to the config resolver, which then reports them
    # as coming from the environment rather than from a flag.
    from_env = {p for p in ("server", "api_key") if ctx.get_parameter_source(p) == _ENVIRONMENT}
    checks: list[dc.Check] = []
    config_check, cfg = dc.check_config(
        None if "server" in from_env else server, None if "api_key" in from_env else api_key
    )
    checks.append(config_check)
    server_version = role = None
    client = None
    if cfg is None:
        checks.append(dc.Check("server", dc.SKIP, "no usable config"))
    else:
        from fetchml.client import FetchmlClient

        client = FetchmlClient(cfg.server_url, cfg.api_key, timeout=min(cfg.timeout, dc.HTTP_TIMEOUT))
        server_check, server_version = dc.check_server(client)
        checks.append(server_check)
        if server_version is None:
            checks.append(dc.Check("key", dc.SKIP, "server not reached"))
        elif cfg.api_key is None:
            checks.append(dc.Check("key", dc.SKIP, "no API key"))
        else:
            key_checks, role = dc.check_key(client)
            checks += key_checks
    try:
        checks.append(dc.check_versions(client, server_version, role))
    finally:
        if client is not None:
            client.close()
    docker_check, info = dc.check_docker()
    gpus_check, gpu_count = dc.check_gpus()
    checks += [docker_check, dc.check_nvidia_runtime(info, gpu_count), gpus_check]
    checks.append(dc.check_dataset_roots(list(dataset_root or [])))
    checks.append(
        dc.check_disk(
            "data-dir", data_dir or default_data_dir(), min_free_gb, min_free_percent, "FETCHML_DATA_DIR"
        )
    )
    checks.append(
        dc.check_disk(
            "work-dir", work_dir or _default_work_dir(), min_free_gb, min_free_percent, "--work-dir"
        )
    )

    failed = [c for c in checks if c.status == dc.FAIL]
    warned = [c for c in checks if c.status == dc.WARN]
    if as_json:
        import json

        out = {
            "ok": not failed,
            "client_version": __version__,
            "failures": len(failed),
            "warnings": len(warned),
            "checks": [c.as_dict() for c in checks],
        }
        sys.stdout.write(json.dumps(out, indent=2, ensure_ascii=False) + "\n")
    else:
        _print(checks, len(failed), len(warned))
    if failed:
        raise typer.Exit(EXIT_ERROR)


def _print(checks: list[Check], failed: int, warned: int) -> None:
    color = sys.stdout.isatty() and not os.environ.get("NO_COLOR")
    width = max(len(c.name) for c in checks) + 2
    for c in checks:
        label = f"{LABELS[c.status]:<5}"
        if color:
            label = typer.style(label, fg=COLORS[c.status], bold=c.status == "fail")
        typer.echo(f"{label} {c.name:<{width}}{c.detail}")
        if c.fix:
            typer.echo(f"{'':<6}{'':<{width}}fix: {c.fix}")
    if failed:
        summary = f"{failed} problem(s) block use" + (f", {warned} warning(s)" if warned else "") + "."
    elif warned:
        summary = f"Usable, with {warned} warning(s)."
    else:
        summary = "All good."
    typer.echo(summary)
