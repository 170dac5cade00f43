"""What the OWASP tests of object and property access share: a module's server with the mlflow
plugin enabled, the keys of two users, an admin and a worker, and a registered fake worker."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass

import pytest

from tests.harness import ServerHandle
from tests.protocol_kit import FakeWorker, cancel_leftovers, enable_plugins


@dataclass
class K:
    admin: str
    alice: str
    bob: str
    worker: str


def make_ks(srv: ServerHandle) -> K:
    return K(
        admin=srv.make_key("root", "admin"),
        alice=srv.make_key("alice", "user"),
        bob=srv.make_key("bob", "user"),
        worker=srv.make_key("rack", "worker"),
    )


def plugin_server(factory: Callable[..., ServerHandle], **env: str) -> ServerHandle:
    srv = factory(FETCHML_RATE_LIMIT_PER_MINUTE="100000", **env)
    enable_plugins(srv, "mlflow")
    return srv


@pytest.fixture(scope="module")
def srv(module_server_factory: Callable[..., ServerHandle]) -> ServerHandle:
    return plugin_server(module_server_factory)


@pytest.fixture(scope="module")
def ks(srv: ServerHandle) -> K:
    return make_ks(srv)


@pytest.fixture
def worker(srv: ServerHandle, ks: K) -> Iterator[FakeWorker]:
    w = FakeWorker(srv, ks.worker)
    w.register()
    yield w
    w.close()
    cancel_leftovers(srv, ks.admin)
