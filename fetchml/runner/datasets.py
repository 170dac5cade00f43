"""Datasets on a worker: fetched once, checked against their SHA-256, cached by source and digest.

A dataset's `source` is one file (a tarball, an archive, a single data file), named by a local
path, a `file://` URL or an http(s) URL. Folders are not sources: pack one into a tarball first,
so that its SHA-256 is well defined. The task gets the file as it is at its mount path; it is
not unpacked.

The worker is a trust boundary, so a source is vetted before anything is read, and before the
cache is even looked at (a cache hit must never grant what the source itself would not):

- local paths and `file://` URLs only inside the roots the operator listed (`--dataset-root`),
  after resolving links and `..`; only regular files (no devices, fifos, /proc files);
- http(s) only to public addresses, checked after DNS resolution, on every redirect hop, and
  again at connect time on the very address the socket connects to (so DNS rebinding between
  check and connect cannot reach an internal service), unless the operator allows private
  addresses (`--allow-private-datasets`);
- at most `max_bytes` per dataset (Content-Length checked up front, the stream cut past it);
- every read has a timeout, and a cancel stops a fetch between chunks (a watcher also shuts the
  socket down, so a stalled read ends at once).

A checksum mismatch says only that the file does not match: telling the real digest would let a
submitter learn, then mount, files they cannot name the hash of.

The cache is cache_dir/<sha256 of the vetted source>/<sha256>, written through a temporary file
and renamed only after the digest matched, so it never holds a wrong or partial file, and two
sources never share an entry (naming someone else's digest with a made-up source misses). Cached
files are read-only, in folders only the worker can enter; a stamp beside each (device, inode,
size, mtime and ctime; a task can reset mtime but never ctime) lets a hit skip hashing, and a
file that changed since it was verified is hashed again, and fetched again if it no longer
matches. Tasks never get the cache entry itself where they could write it: see
fetchml.runner.workspace for how it is placed.
"""

from __future__ import annotations

import contextlib
import hashlib
import ipaddress
import os
import socket
import stat
import tempfile
import threading
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO
from urllib.parse import unquote, urlsplit, urlunsplit
from urllib.request import url2pathname

import httpcore
import httpx

from fetchml.core.archive import sha256_file
from fetchml.core.models import DatasetSpec
from fetchml.runner.dataset_progress import FetchReport, Say

_CHUNK = 1024 * 1024
DEFAULT_MAX_DATASET_BYTES = 64 * 1024**3
_REDIRECTS = (301, 302, 303, 307, 308)


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


# -- the address guard ----------------------------------------------------------------------

_CGNAT = ipaddress.ip_network("100.64.0.0/10")
_NAT64 = ipaddress.ip_network("64:ff9b::/96")
IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


def _embedded_v4(ip: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    # IPv6 forms that carry an IPv4 address a host may end up talking to.
    if ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    if ip.sixtofour is not None:
        return ip.sixtofour
    if ip in _NAT64:
        return ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
    return None


def address_refusal(ip: IPAddress) -> str | None:
    """Why `ip` may not be downloaded from (a short phrase), or None for a public address."""
    if isinstance(ip, ipaddress.IPv6Address):
        inner = _embedded_v4(ip)
        if inner is not None:
            why = address_refusal(inner)
            if why is not None:
                return why
    checks: list[tuple[bool, str]] = [
        (ip.is_loopback, "loopback"),
        (ip.is_link_local, "link-local"),
        (ip.is_unspecified, "unspecified"),
        (ip.is_multicast, "multicast"),
        (isinstance(ip, ipaddress.IPv4Address) and ip in _CGNAT, "shared (CGNAT)"),
        (ip.is_private, "private"),
        (ip.is_reserved, "reserved"),
        (not ip.is_global, "non-public"),
    ]
    return next((why for bad, why in checks if bad), None)


def vet_host(host: str, port: int, *, allow_private: bool) -> list[str]:
    """The addresses `host` resolves to, every one of which may be contacted. Raises
    AddressRefused, before any connection, if one may not (a name with one bad address among
    good ones is refused: which one a client picks is not ours to choose)."""
    host = host.strip("[]")
    addrs = _resolve(host, port)
    if allow_private:
        return addrs
    for addr in addrs:
        why = address_refusal(ipaddress.ip_address(addr.split("%")[0]))
        if why is not None:
            # The address itself is not told: a worker's DNS may know internal names.
            raise AddressRefused(
                f"host {host!r} is or resolves to a {why} address; this worker downloads "
                "datasets only from public addresses (its operator can allow private ones "
                "with --allow-private-datasets)"
            )
    return addrs


def _resolve(host: str, port: int) -> list[str]:
    try:
        return [str(ipaddress.ip_address(host.split("%")[0]))]
    except ValueError:
        pass
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (OSError, UnicodeError):
        infos = []
    addrs = list(dict.fromkeys(str(info[4][0]) for info in infos))
    if not addrs:
        raise DatasetError(f"cannot resolve host {host!r}")
    return addrs


class _GuardedBackend(httpcore.SyncBackend):
    """Resolves, vets and connects in one step, to the vetted address itself: no second DNS
    answer can slip in between check and connect. TLS is unaffected: httpcore sends SNI and
    checks the certificate against the URL's host, not the address connected to."""

    def __init__(self, allow_private: bool) -> None:
        self.allow_private = allow_private

    def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore.NetworkStream:
        last: Exception | None = None
        for addr in vet_host(host, port, allow_private=self.allow_private):
            try:
                return super().connect_tcp(addr, port, timeout, local_address, socket_options)
            except (httpcore.ConnectError, httpcore.ConnectTimeout) as exc:
                last = exc
        assert last is not None
        raise last


class _PinnedTransport(httpx.HTTPTransport):
    def __init__(self, allow_private: bool) -> None:
        ssl_context = httpx.create_ssl_context()
        super().__init__(verify=ssl_context)
        # httpx takes no network backend; its pool is replaced by one that uses ours.
        self._pool = httpcore.ConnectionPool(
            ssl_context=ssl_context, max_connections=4, network_backend=_GuardedBackend(allow_private)
        )


# -- local sources --------------------------------------------------------------------------


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


# -- the cache ------------------------------------------------------------------------------


def _stamp_path(final: Path) -> Path:
    return final.parent / f".{final.name}.verified"


def _stamp_of(st: os.stat_result) -> str:
    return f"{st.st_dev} {st.st_ino} {st.st_size} {st.st_mtime_ns} {st.st_ctime_ns}"


def write_stamp(final: Path) -> None:
    """Record `final` as verified as it is now. Also for whoever just hard-linked it, which
    changes its ctime (and so would make the next use hash it again)."""
    _stamp_path(final).write_text(_stamp_of(final.stat()) + "\n")


def copy_verified(src: Path, dst: Path, sha256: str) -> None:
    """Copy `src` to a new file `dst` (mode 0444), hashing on the way: a cache entry changed
    between its check and this copy never reaches a task."""
    hasher = hashlib.sha256()
    fd = os.open(dst, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o644)
    try:
        with open(src, "rb") as inp, os.fdopen(fd, "wb", closefd=False) as out:
            while chunk := inp.read(_CHUNK):
                hasher.update(chunk)
                out.write(chunk)
        os.fchmod(fd, 0o444)
    finally:
        os.close(fd)
    if hasher.hexdigest() != sha256:
        dst.unlink(missing_ok=True)
        raise DatasetError(f"cached dataset {src.name} changed while it was being copied; try again")


class DatasetCache:
    def __init__(self, cache_dir: Path, policy: DatasetPolicy | None = None) -> None:
        self.cache_dir = Path(cache_dir)
        self.policy = policy or DatasetPolicy()
        self._roots = [os.path.realpath(Path(r).expanduser()) for r in self.policy.roots]

    def fetch(self, spec: DatasetSpec, cancel: threading.Event | None = None, say: Say | None = None) -> Path:
        """The verified local copy of `spec`'s file, fetched only when not cached already.
        `say` gets its progress lines for the task's log (fetchml.runner.dataset_progress).
        Raises DatasetError (DatasetCancelled once `cancel` is set)."""
        report = FetchReport(spec.name, say)
        try:
            return self._fetch(spec, cancel, report)
        except DatasetCancelled:
            raise
        except DatasetError as exc:
            report.failed(str(exc))
            raise type(exc)(f"dataset {spec.name!r}: {exc}") from None

    def _fetch(self, spec: DatasetSpec, cancel: threading.Event | None, report: FetchReport) -> Path:
        src = self._vet(spec.source)
        folder = self.cache_dir / hashlib.sha256(src.key.encode()).hexdigest()
        final = folder / spec.sha256
        if self._hit(spec.sha256, final):
            report.hit(final.stat().st_size)
            return final
        report.fetching(src.where)
        for d in (self.cache_dir, folder):
            d.mkdir(mode=0o700, parents=True, exist_ok=True)
            os.chmod(d, 0o700)  # tasks never see the cache folders, not even their names
        fd, tmp_name = tempfile.mkstemp(dir=folder, prefix=f".{spec.sha256}.", suffix=".part")
        tmp = Path(tmp_name)
        limit = self.policy.max_bytes
        try:
            hasher = hashlib.sha256()
            total = 0
            with os.fdopen(fd, "wb") as out:
                for chunk in self._read(src, cancel, report):
                    if cancel is not None and cancel.is_set():
                        raise DatasetCancelled()
                    total += len(chunk)
                    if total > limit:
                        raise DatasetError(f"{src.where} is larger than this worker's limit of {limit} bytes")
                    hasher.update(chunk)
                    out.write(chunk)
                    report.advance(len(chunk))
                out.flush()
                os.fsync(out.fileno())
            if hasher.hexdigest() != spec.sha256:
                raise DatasetError(f"the file at {src.where} does not match the expected sha256")
            os.chmod(tmp, 0o444)
            os.replace(tmp, final)
            write_stamp(final)
        finally:
            tmp.unlink(missing_ok=True)
        report.verified()
        return final

    def _hit(self, sha256: str, final: Path) -> bool:
        try:
            st = final.stat()
        except FileNotFoundError:
            return False
        stamp = _stamp_path(final)
        try:
            if stamp.read_text().strip() == _stamp_of(st) and stat.S_IMODE(st.st_mode) & 0o222 == 0:
                return True
        except (FileNotFoundError, ValueError):
            pass
        if sha256_file(final) == sha256:  # touched since verified (a link, a chmod): still right
            os.chmod(final, 0o444)
            write_stamp(final)
            return True
        final.unlink(missing_ok=True)
        stamp.unlink(missing_ok=True)
        return False

    # -- vetting ----------------------------------------------------------------------------

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

    # -- reading ----------------------------------------------------------------------------

    def _read(self, src: _Source, cancel: threading.Event | None, report: FetchReport) -> Iterator[bytes]:
        if src.url is not None:
            yield from self._download(src, cancel, report)
            return
        assert src.path is not None
        with self._open_local(src) as fh:
            report.expect(os.fstat(fh.fileno()).st_size)
            try:
                while chunk := fh.read(_CHUNK):
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
