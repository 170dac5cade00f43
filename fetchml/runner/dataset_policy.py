"""What a worker's operator allows datasets to be, the errors that refuse one, and how a source
is shown in messages. The vetting itself: dataset_sources and dataset_guard."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

CHUNK = 1024 * 1024  # bytes per read and per hash update, for downloads, local files and copies
DEFAULT_MAX_DATASET_BYTES = 64 * 1024**3


class DatasetError(Exception):
    """A dataset could not be provided; the message names it and says why."""


class DatasetCancelled(DatasetError):
    """The attempt was cancelled while its dataset was being fetched."""

    def __init__(self) -> None:
        super().__init__("cancelled")


class AddressRefused(DatasetError):
    """A URL's host is, or resolves to, an address this worker does not download from."""


@dataclass(frozen=True)
class DatasetPolicy:
    """What a worker's operator allows tasks to fetch (see docs/configuration.md)."""

    roots: tuple[Path, ...] = ()  # local sources only under these; none: no local sources
    allow_private: bool = False  # URLs to loopback, private, link-local, ... addresses
    max_bytes: int = DEFAULT_MAX_DATASET_BYTES
    connect_timeout: float = 10.0
    read_timeout: float = 60.0  # per read, not for the whole download
    max_redirects: int = 5


def display_source(source: str) -> str:
    """The source as it may be shown: no credentials, no query string (tokens live there)."""
    if "://" not in source:
        return source
    parts = urlsplit(source)
    host = parts.hostname or ""
    if parts.port:
        host = f"{host}:{parts.port}"
    return urlunsplit((parts.scheme, host, parts.path, "", ""))
