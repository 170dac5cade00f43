"""Typed HTTP client: the only way the CLI, TUI and runner reach a server.

The package loads lazily: `fetchml.client.config` (read by `fetchml config`) must not pay for
httpx and pydantic, so names here are imported on first use.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

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
