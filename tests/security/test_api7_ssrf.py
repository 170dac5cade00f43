"""API7 Server-side request forgery: a task's dataset URL must not make the worker reach what only
the worker can reach (loopback services, the cloud metadata endpoint, the private network).

No test here sends a packet anywhere but 127.0.0.1: refusals of other addresses are checked on
the guard itself, with names answered by a patched resolver, and `socket.create_connection` (what
the HTTP stack connects with) replaced by a recorder that must stay empty."""

from __future__ import annotations

import hashlib
import ipaddress
import re
import socket
import threading
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from fetchml.core.models import DatasetSpec
from fetchml.runner import dataset_guard, datasets
from fetchml.runner.datasets import (
    AddressRefused,
    DatasetCache,
    DatasetError,
    DatasetPolicy,
    address_refusal,
    vet_host,
)
from tests.e2e.conftest import Cluster
from tests.e2e.conftest import cluster as cluster  # the fixture, for the end-to-end test

BODY = b"secret of a loopback-only service\n"

REFUSED = [
    "127.0.0.1", "127.5.5.5", "::1",  # loopback
    "10.0.0.1", "172.16.3.4", "192.168.1.1", "fc00::1", "fd12:3456::1",  # private, ULA
    "169.254.169.254", "fe80::1",  # link-local, the metadata endpoint
    "0.0.0.0", "::",  # unspecified
    "224.0.0.1", "ff02::1",  # multicast
    "240.0.0.1", "255.255.255.255",  # reserved, broadcast
    "100.64.0.1", "100.127.255.254",  # CGNAT
    "::ffff:10.0.0.1", "::ffff:127.0.0.1", "::ffff:169.254.169.254",  # IPv4-mapped
    "64:ff9b::a9fe:a9fe", "2002:a00:1::",  # NAT64 and 6to4 around 169.254.169.254 and 10.0.0.1
    "192.0.2.1", "198.18.0.1",  # documentation, benchmarking
]  # fmt: skip
PUBLIC = ["93.184.216.34", "8.8.8.8", "1.1.1.1", "2606:4700:4700::1111", "2a00:1450:4001:81b::200e"]


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@pytest.mark.parametrize("addr", REFUSED)
def test_non_public_addresses_are_refused(addr: str) -> None:
    assert address_refusal(ipaddress.ip_address(addr)) is not None
    with pytest.raises(AddressRefused, match="public addresses"):
        vet_host(addr, 80, allow_private=False)
    assert vet_host(addr, 80, allow_private=True) == [str(ipaddress.ip_address(addr))]


@pytest.mark.parametrize("addr", PUBLIC)
def test_public_addresses_pass(addr: str) -> None:
    assert address_refusal(ipaddress.ip_address(addr)) is None
    assert vet_host(addr, 443, allow_private=False) == [str(ipaddress.ip_address(addr))]


class Net:
    """A resolver with fixed answers and a recorder in place of socket.create_connection."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.names: dict[str, list[str] | Callable[[], list[str]]] = {}
        self.lookups: list[str] = []
        self.connects: list[tuple[str, int]] = []
        real_getaddrinfo = socket.getaddrinfo

        def getaddrinfo(host: Any, port: Any, *args: Any, **kwargs: Any) -> Any:
            self.lookups.append(str(host))
            answer = self.names.get(str(host))
            if answer is None:
                # Numeric forms (2130706433, 0x7f.1) only: nothing here may ask a real DNS server.
                return real_getaddrinfo(host, port, *args, flags=socket.AI_NUMERICHOST)
            addrs = answer() if callable(answer) else answer
            return [
                (
                    socket.AF_INET6 if ":" in a else socket.AF_INET,
                    socket.SOCK_STREAM,
                    6,
                    "",
                    (a, port, 0, 0) if ":" in a else (a, port),
                )
                for a in addrs
            ]

        def create_connection(address: tuple[str, int], *args: Any, **kwargs: Any) -> socket.socket:
            self.connects.append((address[0], address[1]))
            raise ConnectionRefusedError(111, "refused by the test")

        monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
        monkeypatch.setattr(socket, "create_connection", create_connection)


@pytest.fixture
def net(monkeypatch: pytest.MonkeyPatch) -> Net:
    return Net(monkeypatch)


def fetch(tmp_path: Path, url: str, **policy: Any) -> Path:
    cache = DatasetCache(tmp_path / "cache", DatasetPolicy(connect_timeout=2, read_timeout=5, **policy))
    return cache.fetch(DatasetSpec(name="d", source=url, sha256="0" * 64))


@pytest.mark.parametrize(
    "url",
    [
        "http://169.254.169.254/latest/meta-data/iam/security-credentials/",
        "http://[::1]:9101/v1/keys",
        "http://10.0.0.1/x",
        "http://0.0.0.0:9101/",
        "https://[fd00::5]/x",
        "http://[::ffff:127.0.0.1]:9101/",
        "http://2130706433:9101/",  # 127.0.0.1 written as one number
        "http://0x7f.1:9101/",
    ],
)
def test_literal_internal_urls_are_refused_before_any_connection(tmp_path: Path, net: Net, url: str) -> None:
    with pytest.raises(AddressRefused, match="downloads datasets only from public addresses"):
        fetch(tmp_path, url)
    assert net.connects == []


@pytest.mark.parametrize(
    "answer",
    [["10.0.0.1"], ["169.254.169.254"], ["127.0.0.1"], ["fd00::1"], ["93.184.216.34", "10.0.0.1"]],
)
def test_names_that_resolve_inside_are_refused_before_any_connection(
    tmp_path: Path, net: Net, answer: list[str]
) -> None:
    net.names["evil.test"] = answer
    with pytest.raises(AddressRefused) as exc:
        fetch(tmp_path, "http://evil.test/data.tar")
    assert net.connects == []
    assert "evil.test" in str(exc.value)
    assert not any(a in str(exc.value) for a in answer), "the resolved address is not told"


def test_a_public_name_is_connected_at_the_address_that_was_checked(tmp_path: Path, net: Net) -> None:
    net.names["public.test"] = ["93.184.216.34"]
    with pytest.raises(
        DatasetError, match=re.escape("download from http://public.test/x failed: ConnectError")
    ):
        fetch(tmp_path, "http://public.test/x")
    with pytest.raises(DatasetError, match="failed: ConnectError"):
        fetch(tmp_path, "https://public.test/x")
    # The socket goes to the vetted address, never to a name resolved a second time elsewhere.
    assert net.connects == [("93.184.216.34", 80), ("93.184.216.34", 443)]


def test_dns_rebinding_between_check_and_connect_is_refused(tmp_path: Path, net: Net) -> None:
    answers = iter([["93.184.216.34"], ["127.0.0.1"]])
    net.names["rebind.test"] = lambda: next(answers)
    with pytest.raises(AddressRefused):
        fetch(tmp_path, "http://rebind.test/x")
    assert len(net.lookups) == 2, "checked once up front, once more at connect time"
    assert net.connects == []


def test_with_the_operator_flag_private_addresses_are_allowed(tmp_path: Path, net: Net) -> None:
    net.names["intranet.test"] = ["10.0.0.7"]
    with pytest.raises(DatasetError, match="ConnectError"):
        fetch(tmp_path, "http://intranet.test/x", allow_private=True)
    assert net.connects == [("10.0.0.7", 80)]  # recorded, refused by the recorder: never sent


# -- with real loopback servers ---------------------------------------------------------------


class Served:
    def __init__(self, host: str, handler: type[BaseHTTPRequestHandler]) -> None:
        self.hits: list[str] = []
        hits = self.hits

        class H(handler):  # type: ignore[valid-type,misc]
            def do_GET(self) -> None:
                hits.append(self.path)
                super().do_GET()

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer((host, 0), H)
        self.url = f"http://{host}:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(5)


class Secret(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        self.send_response(200)
        self.send_header("Content-Length", str(len(BODY)))
        self.end_headers()
        self.wfile.write(BODY)


def redirect_to(location: str) -> type[BaseHTTPRequestHandler]:
    class Redirect(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(302)
            self.send_header("Location", location)
            self.send_header("Content-Length", "0")
            self.end_headers()

    return Redirect


@pytest.fixture
def served() -> Iterator[Callable[[str, type[BaseHTTPRequestHandler]], Served]]:
    started: list[Served] = []

    def start(host: str, handler: type[BaseHTTPRequestHandler]) -> Served:
        started.append(Served(host, handler))
        return started[-1]

    yield start
    for s in started:
        s.close()


def test_a_loopback_service_is_reached_only_with_the_flag(
    tmp_path: Path, served: Callable[[str, type[BaseHTTPRequestHandler]], Served]
) -> None:
    secret = served("127.0.0.1", Secret)
    spec = DatasetSpec(name="d", source=f"{secret.url}/admin", sha256=sha(BODY))
    with pytest.raises(AddressRefused):
        DatasetCache(tmp_path / "cache").fetch(spec)
    assert secret.hits == []
    allowed = DatasetCache(tmp_path / "cache", DatasetPolicy(allow_private=True))
    assert allowed.fetch(spec).read_bytes() == BODY
    assert secret.hits == ["/admin"]


def test_a_redirect_from_an_allowed_server_to_loopback_is_refused(
    tmp_path: Path,
    served: Callable[[str, type[BaseHTTPRequestHandler]], Served],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # 127.0.0.2 plays a public server: the guard is told so, and nothing else changes.
    real = datasets.address_refusal
    monkeypatch.setattr(dataset_guard, "address_refusal", lambda ip: None if str(ip) == "127.0.0.2" else real(ip))
    secret = served("127.0.0.1", Secret)
    hop = served("127.0.0.2", redirect_to(f"{secret.url}/admin"))
    spec = DatasetSpec(name="d", source=f"{hop.url}/data.tar", sha256=sha(BODY))
    with pytest.raises(AddressRefused, match=re.escape("'127.0.0.1'")):
        DatasetCache(tmp_path / "cache").fetch(spec)
    assert hop.hits == ["/data.tar"] and secret.hits == []
    # With the operator's flag the same redirect is followed.
    got = DatasetCache(tmp_path / "cache", DatasetPolicy(allow_private=True)).fetch(spec)
    assert got.read_bytes() == BODY and secret.hits == ["/admin"]


def test_a_redirect_to_another_scheme_is_refused(
    tmp_path: Path, served: Callable[[str, type[BaseHTTPRequestHandler]], Served]
) -> None:
    hop = served("127.0.0.1", redirect_to("file:///etc/passwd"))
    cache = DatasetCache(tmp_path / "cache", DatasetPolicy(allow_private=True, roots=(Path("/"),)))
    with pytest.raises(DatasetError, match="is not an http"):
        cache.fetch(DatasetSpec(name="d", source=f"{hop.url}/x", sha256="0" * 64))


# -- end to end: a real worker process ----------------------------------------------------------


def test_a_worker_refuses_a_loopback_dataset_url_unless_its_operator_allows_it(
    cluster: Cluster, served: Callable[[str, type[BaseHTTPRequestHandler]], Served]
) -> None:
    secret = served("127.0.0.1", Secret)
    spec = {"name": "d", "source": f"{secret.url}/admin", "sha256": sha(BODY), "mount_path": "d.bin"}
    cluster.start_worker("strict", "--executor", "local")
    tid = cluster.submit(entrypoint="cat d.bin", dataset_specs=[spec])
    t = cluster.wait_status(tid, "completed", "failed")
    assert t["status"] == "failed" and "only from public addresses" in t["error"], t
    assert secret.hits == []
    cluster.stop()
    cluster.workers.clear()
    cluster.start_worker("lenient", "--executor", "local", "--allow-private-datasets")
    tid = cluster.submit(entrypoint="cat d.bin", dataset_specs=[spec])
    t = cluster.wait_status(tid, "completed", "failed")
    assert t["status"] == "completed", t
    assert cluster.logs(tid) == [BODY.decode().strip()]
