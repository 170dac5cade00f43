"""Reading a vetted dataset source: a local file opened without following a last link and
checked again once open, or an http(s) download through the address guard (dataset_guard) that
vets every redirect hop, cuts the stream past the size limit and stops at once on a cancel."""

from __future__ import annotations

import contextlib
import os
import socket
import stat
import threading
from collections.abc import Iterator
from typing import BinaryIO

import httpx

from fetchml.runner.dataset_guard import _PinnedTransport
from fetchml.runner.dataset_policy import CHUNK, DatasetCancelled, DatasetError, display_source
from fetchml.runner.dataset_progress import FetchReport
from fetchml.runner.dataset_sources import _PSEUDO, SourceMixin, _inside_any, _Source

_REDIRECTS = (301, 302, 303, 307, 308)


class ReadMixin(SourceMixin):
    """The reading half of DatasetCache (fetchml.runner.dataset_cache)."""

    def _read(self, src: _Source, cancel: threading.Event | None, report: FetchReport) -> Iterator[bytes]:
        if src.url is not None:
            yield from self._download(src, cancel, report)
            return
        assert src.path is not None
        with self._open_local(src) as fh:
            report.expect(os.fstat(fh.fileno()).st_size)
            try:
                while chunk := fh.read(CHUNK):
                    yield chunk
            except OSError as exc:
                raise DatasetError(f"cannot read {src.where}: {exc.strerror}") from None

    def _open_local(self, src: _Source) -> BinaryIO:
        assert src.path is not None
        if src.path.is_dir():
            raise DatasetError(
                f"source {src.where} is a folder; sources must be files "
                "(pack a folder into a tarball and use its sha256)"
            )
        # Non-blocking, so that opening a fifo does not hang; no link as the last part.
        flags = os.O_RDONLY | os.O_NONBLOCK | os.O_NOFOLLOW | os.O_CLOEXEC | getattr(os, "O_NOCTTY", 0)
        try:
            fd = os.open(src.path, flags)
        except FileNotFoundError:
            raise DatasetError(f"source {src.where} not found") from None
        except OSError as exc:
            raise DatasetError(f"cannot read {src.where}: {exc.strerror}") from None
        try:
            st = os.fstat(fd)
            if not stat.S_ISREG(st.st_mode):
                raise DatasetError(f"source {src.where} is not a regular file")
            # A folder on the way swapped for a link after the check: what was opened counts.
            opened = f"/proc/self/fd/{fd}"
            if os.path.exists(opened):
                real = os.readlink(opened)
                if not _inside_any(real, self._roots) or _inside_any(real, _PSEUDO):
                    raise DatasetError(f"source {src.where} is outside the dataset roots this worker allows")
            if st.st_size > self.policy.max_bytes:
                raise DatasetError(
                    f"{src.where} is larger than this worker's limit of {self.policy.max_bytes} bytes"
                )
            os.set_blocking(fd, True)
            return os.fdopen(fd, "rb")
        except BaseException:
            os.close(fd)
            raise

    def _download(self, src: _Source, cancel: threading.Event | None, report: FetchReport) -> Iterator[bytes]:
        p = self.policy
        timeout = httpx.Timeout(p.read_timeout, connect=p.connect_timeout)
        url = src.url
        assert url is not None
        where = src.where
        # trust_env=False: a proxy from the environment would connect where the guard never looked.
        with httpx.Client(
            transport=_PinnedTransport(p.allow_private),
            trust_env=False,
            follow_redirects=False,
            timeout=timeout,
            headers={"Accept-Encoding": "identity"},
        ) as http:
            for hop in range(p.max_redirects + 1):
                if hop:  # the first was vetted before the cache was looked at
                    self._vet_url(url)
                try:
                    with http.stream("GET", url) as resp:
                        if resp.status_code in _REDIRECTS and "location" in resp.headers:
                            url = str(resp.url.join(resp.headers["location"]))
                            where = f"{src.where} (redirected to {display_source(url)})"
                            continue
                        if resp.status_code != 200:
                            raise DatasetError(f"download from {where} failed: HTTP {resp.status_code}")
                        length = resp.headers.get("content-length", "")
                        if length.isdigit() and int(length) > p.max_bytes:
                            raise DatasetError(
                                f"{where} is larger than this worker's limit of {p.max_bytes} bytes"
                            )
                        report.expect(int(length) if length.isdigit() else None)
                        yield from _body(resp, cancel)
                        return
                except httpx.HTTPError as exc:
                    if cancel is not None and cancel.is_set():
                        raise DatasetCancelled() from None
                    raise DatasetError(f"download from {where} failed: {type(exc).__name__}") from None
            raise DatasetError(f"download from {src.where} failed: more than {p.max_redirects} redirects")


def _body(resp: httpx.Response, cancel: threading.Event | None) -> Iterator[bytes]:
    """The body, chunk by chunk as it arrives; a cancel shuts the socket down, which ends a read
    that is waiting for a silent server at once instead of after the read timeout."""
    if cancel is None:
        yield from resp.iter_bytes()
        return
    stream = resp.extensions.get("network_stream")
    sock = stream.get_extra_info("socket") if stream is not None else None
    done = threading.Event()

    def watch() -> None:
        while not done.is_set():
            if cancel.wait(0.2):
                if sock is not None:
                    # The plain socket's shutdown, also under TLS: wakes the blocked reader.
                    with contextlib.suppress(OSError):
                        socket.socket.shutdown(sock, socket.SHUT_RDWR)
                return

    watcher = threading.Thread(target=watch, name="fetchml-dataset-cancel", daemon=True)
    watcher.start()
    try:
        for chunk in resp.iter_bytes():
            if cancel.is_set():
                raise DatasetCancelled()
            yield chunk
    finally:
        done.set()
        watcher.join(1)
    if cancel.is_set():
        raise DatasetCancelled()
