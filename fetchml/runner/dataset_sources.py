"""A dataset's source, vetted before anything is read and before the cache is looked at: a local
path or `file://` URL only inside the operator's roots (after resolving links and `..`, never a
kernel view), an http(s) URL only to a host the address guard (dataset_guard) allows."""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote, urlsplit
from urllib.request import url2pathname

import httpx

from fetchml.runner.dataset_guard import vet_host
from fetchml.runner.dataset_policy import DatasetError, DatasetPolicy, display_source


def _local_path(source: str) -> Path:
    if source.startswith("file://"):
        parts = urlsplit(source)
        if parts.netloc not in ("", "localhost"):
            raise ValueError(f"file:// URL names host {parts.netloc!r}; only local files can be read")
        return Path(url2pathname(unquote(parts.path)))
    return Path(source).expanduser()


def _inside_any(real: str, roots: Iterable[str]) -> bool:
    return any(os.path.commonpath([real, root]) == root for root in roots)


# Kernel views (the worker's environment, devices, sysfs): never data, even under a root such
# as "/". Their files claim to be regular and empty, so the file type alone would not tell.
_PSEUDO = ("/proc", "/sys", "/dev")


@dataclass(frozen=True)
class _Source:
    key: str  # names the cache folder: the source after vetting
    where: str  # what messages show
    path: Path | None = None  # a local file (resolved)
    url: str | None = None


class SourceMixin:
    """The vetting half of DatasetCache (fetchml.runner.dataset_cache)."""

    policy: DatasetPolicy
    _roots: list[str]  # the policy's roots, resolved

    def _vet(self, source: str) -> _Source:
        where = display_source(source)
        if source.startswith(("http://", "https://")):
            return _Source(key="url:" + str(httpx.URL(self._vet_url(source))), where=where, url=source)
        try:
            path = _local_path(source)
        except ValueError as exc:
            raise DatasetError(str(exc)) from None
        real = os.path.realpath(path)
        if not self._roots:
            raise DatasetError(
                f"source {where} is a local path, and this worker allows no local dataset sources "
                "(its operator can allow folders with --dataset-root)"
            )
        if not _inside_any(real, self._roots):
            raise DatasetError(f"source {where} is outside the dataset roots this worker allows")
        if _inside_any(real, _PSEUDO):
            raise DatasetError(f"source {where} is not a regular file")
        return _Source(key="file:" + real, where=where, path=Path(real))

    def _vet_url(self, url: str) -> str:
        try:
            parsed = httpx.URL(url)
        except httpx.InvalidURL:
            raise DatasetError(f"invalid URL {display_source(url)}") from None
        if parsed.scheme not in ("http", "https") or not parsed.host:
            raise DatasetError(f"{display_source(url)} is not an http(s) URL")
        port = parsed.port or (443 if parsed.scheme == "https" else 80)
        vet_host(parsed.host, port, allow_private=self.policy.allow_private)
        return url
