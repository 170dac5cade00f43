"""The address guard of dataset downloads: which addresses a worker may download from, checked
after DNS resolution and again at connect time, on the very address the socket connects to (so
DNS rebinding between check and connect cannot reach an internal service)."""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Iterable
from typing import Any

import httpcore
import httpx

from fetchml.runner.dataset_policy import AddressRefused, DatasetError

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
