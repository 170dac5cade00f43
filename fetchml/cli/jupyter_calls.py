"""How `fetchml jupyter` calls the server: a refusal as one line with a hint, waiting for a
service's status, and its proxy URL."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, NoReturn

from fetchml.cli.common import console, fail, text
from fetchml.cli.jupyter_render import _note

if TYPE_CHECKING:
    from fetchml.client import FetchmlClient
    from fetchml.core.errors import FetchmlError
    from fetchml.core.jupyter import JupyterService

POLL = 0.5  # seconds between reads while waiting

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


def _proxy_url(c: FetchmlClient, svc: JupyterService) -> str:
    return c.server_url.rstrip("/") + svc.proxy_path


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
