"""Typed HTTP client: the only way the CLI, TUI and runner reach a server.

The package loads lazily: `fetchml.client.config` (read by `fetchml config`) must not pay for
httpx and pydantic, so names here are imported on first use.
"""

from __future__ import annotations

import importlib
import sys
import types
from typing import TYPE_CHECKING, Any


def _skip_httpx_cli() -> None:
    """httpx's package imports its own command line (click, pygments, rich tables: ~100 ms)
    whenever click is installed, and uvicorn installs it. fetchml never runs that command line:
    a stand-in module, like the one httpx makes when click is missing, keeps it out of every
    client start-up (issue 17)."""
    if "httpx" in sys.modules or "httpx._main" in sys.modules:
        return
    stub = types.ModuleType("httpx._main")

    def main() -> None:
        sys.exit("fetchml loaded httpx without its command line; run the httpx command on its own")

    stub.main = main  # type: ignore[attr-defined]
    sys.modules["httpx._main"] = stub


_skip_httpx_cli()

if TYPE_CHECKING:
    from fetchml.client.api import FetchmlClient
    from fetchml.client.base import ServerUnreachableError, UnexpectedResponseError
    from fetchml.client.config import ClientConfig, resolve

_LAZY = {
    "FetchmlClient": "fetchml.client.api",
    "ServerUnreachableError": "fetchml.client.base",
    "UnexpectedResponseError": "fetchml.client.base",
    "ClientConfig": "fetchml.client.config",
    "resolve": "fetchml.client.config",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'fetchml.client' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


__all__ = [
    "ClientConfig",
    "FetchmlClient",
    "ServerUnreachableError",
    "UnexpectedResponseError",
    "resolve",
]
