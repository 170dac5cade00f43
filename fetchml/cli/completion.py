"""Shell completion: `fetchml completion SHELL`, `--install-completion`, and values from the server.

Task ids, worker names, reservation ids, plugin names and Jupyter service ids complete from the
configured server (a --server/--api-key already on the line, else FETCHML_SERVER_URL and
FETCHML_API_KEY, else the config file), over the standard library's HTTP client with a deadline of
COMPLETE_TIMEOUT seconds. Any failure completes nothing: a shell prompt is no place for errors.

Which parameters complete what is decided here by parameter name (PARAM_KINDS), and attached when
fetchml/cli/root.py loads a command, so command modules need no completion code of their own.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from typing import Any

import typer

from fetchml.cli.main import COMPLETE_VAR, PROG

SHELLS = ("bash", "zsh", "fish")
COMPLETE_TIMEOUT = 1.0  # seconds, connection and answer together
MAX_ITEMS = 200

# Parameter name -> what it completes. Group-specific names (a plain `name`) go in GROUP_PARAM_KINDS.
PARAM_KINDS = {
    "task_id": "task",
    "worker_id": "worker",
    "service_id": "service",
    "reservation": "reservation",
    "plugins": "plugin",  # submit --plugin NAME[:...]
}
GROUP_PARAM_KINDS = {("plugins", "name"): "plugin"}


def _tasks(body: Any) -> list[tuple[str, str]]:
    return [(t["id"], f"{t.get('job_name', '')} ({t.get('status', '')})") for t in body["tasks"]]


def _workers(body: Any) -> list[tuple[str, str]]:
    return [(w["id"], str(w.get("status", ""))) for w in body]


def _services(body: Any) -> list[tuple[str, str]]:
    return [(s["id"], f"{s.get('name', '')} ({s.get('status', '')})") for s in body]


def _reservations(body: Any) -> list[tuple[str, str]]:
    return [
        (r["id"], f"{r.get('gpu_count', '?')} GPUs x {r.get('node_count', 1)}, {r.get('status', '')}")
        for r in body
    ]


def _plugins(body: Any) -> list[tuple[str, str]]:
    return [(p["name"], "enabled" if p.get("enabled") else "disabled") for p in body]


# kind -> (path, the answer -> (value, help) pairs)
SOURCES: dict[str, tuple[str, Callable[[Any], list[tuple[str, str]]]]] = {
    "task": (f"/v1/tasks?limit={MAX_ITEMS}", _tasks),
    "worker": ("/v1/scheduler/workers", _workers),
    "service": ("/v1/jupyter/services", _services),
    "reservation": ("/v1/scheduler/reservations", _reservations),
    "plugin": ("/v1/plugins", _plugins),
}


def _option(ctx: Any, name: str) -> str | None:
    """A value already typed on the line (--server, --api-key), in this command or a parent."""
    while ctx is not None:
        value = ctx.params.get(name)
        if value:
            return str(value)
        ctx = ctx.parent
    return None


def get_json(url: str, api_key: str | None, path: str, timeout: float = COMPLETE_TIMEOUT) -> Any:
    """GET `path` on the server, within `timeout` seconds in all. Raises on any failure."""
    import http.client
    from urllib.parse import urlsplit

    deadline = time.monotonic() + timeout
    parts = urlsplit(url)
    conn_cls = http.client.HTTPSConnection if parts.scheme == "https" else http.client.HTTPConnection
    conn = conn_cls(parts.hostname or "", parts.port, timeout=timeout)
    try:
        headers = {"User-Agent": "fetchml-completion", "Accept": "application/json"}
        if api_key:
            headers["X-API-Key"] = api_key
        conn.request("GET", parts.path.rstrip("/") + path, headers=headers)
        if conn.sock is not None:
            conn.sock.settimeout(max(deadline - time.monotonic(), 0.01))
        resp = conn.getresponse()
        body = resp.read()
        if resp.status != 200:
            raise OSError(f"HTTP {resp.status}")
        return json.loads(body)
    finally:
        conn.close()


def values(kind: str, server: str | None = None, api_key: str | None = None) -> list[tuple[str, str]]:
    """(value, help) pairs of one kind from the configured server. Raises on any failure."""
    from fetchml.client.config import resolve

    cfg = resolve(server, api_key)
    path, extract = SOURCES[kind]
    return extract(get_json(cfg.server_url, cfg.api_key, path))[:MAX_ITEMS]


def completer(kind: str) -> Callable[[Any, Any, str], list[Any]]:
    def complete(ctx: Any, param: Any, incomplete: str) -> list[Any]:
        from typer._click.shell_completion import CompletionItem

        try:
            found = values(kind, _option(ctx, "server"), _option(ctx, "api_key"))
        except Exception:  # completion stays silent, whatever went wrong
            return []
        return [CompletionItem(v, help=h) for v, h in found if v.startswith(incomplete)]

    return complete


def attach(command: Any, top: str) -> None:
    """Give the parameters named in PARAM_KINDS (under `top`, the top-level command) their completer."""
    for param in getattr(command, "params", []):
        kind = GROUP_PARAM_KINDS.get((top, param.name or "")) or PARAM_KINDS.get(param.name or "")
        if kind and getattr(param, "_custom_shell_complete", None) is None:
            param._custom_shell_complete = completer(kind)
    for sub in getattr(command, "commands", {}).values():
        attach(sub, top)


# --- the scripts ------------------------------------------------------------------------------


def script(shell: str | None) -> str:
    """The completion script for `shell` (default: the one this runs in)."""
    from typer._completion_shared import get_completion_script

    return get_completion_script(prog_name=PROG, complete_var=COMPLETE_VAR, shell=shell or detect_shell())


def detect_shell() -> str:
    """The shell this runs in (by the process tree), else $SHELL's; bash when neither is known."""
    from typer._completion_shared import _get_shell_name

    try:
        name = _get_shell_name()
    except Exception:  # shellingham can fail in odd process trees; fall back
        name = None
    if name not in SHELLS:
        name = os.path.basename(os.environ.get("SHELL", "")) or None
    return name if name in SHELLS else "bash"


def install(shell: str | None) -> None:
    """Write the script where `shell` loads it, and say where."""
    from typer._completion_shared import install as typer_install

    chosen, path = typer_install(shell=shell or detect_shell(), prog_name=PROG, complete_var=COMPLETE_VAR)
    typer.echo(f"{chosen} completion installed in {path}")
    typer.echo("It takes effect in new shells.")


def _complete_shell(incomplete: str) -> list[str]:
    return [s for s in SHELLS if s.startswith(incomplete)]


def completion(
    shell: str = typer.Argument(..., help="bash, zsh or fish.", autocompletion=_complete_shell),
    install_it: bool = typer.Option(
        False,
        "--install",
        help="Also write it where the shell loads it (~/.bashrc, ~/.zfunc, fish's folder).",
    ),
) -> None:
    """Print the shell completion script for bash, zsh or fish.

    Try it in the current shell with eval "$(fetchml completion bash)" (zsh: source <(fetchml
    completion zsh)); --install, or `fetchml --install-completion`, sets it up for good. Task ids,
    worker names, reservation ids, plugin names and Jupyter service ids then complete from the
    configured server.
    """
    if shell not in SHELLS:
        from fetchml.cli.common import EXIT_USAGE, fail

        fail(f"unknown shell {shell!r}: expected one of {', '.join(SHELLS)}", EXIT_USAGE)
    if install_it:
        install(shell)
        return
    typer.echo(script(shell))
