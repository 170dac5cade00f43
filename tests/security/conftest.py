"""What the OWASP tests of object and property access share: a module's server with the mlflow
plugin enabled, the shared keys (tests/harness.py make_keys: admin, user alice, other bob,
worker), and a registered fake worker."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest

from tests.harness import Keys, ServerHandle, make_keys
from tests.protocol_kit import FakeWorker, enable_plugins, registered


def plugin_server(factory: Callable[..., ServerHandle], **env: str) -> ServerHandle:
    srv = factory(FETCHML_RATE_LIMIT_PER_MINUTE="100000", **env)
    enable_plugins(srv, "mlflow")
    return srv


@pytest.fixture(scope="module")
def srv(module_server_factory: Callable[..., ServerHandle]) -> ServerHandle:
    return plugin_server(module_server_factory)


@pytest.fixture(scope="module")
def ks(srv: ServerHandle) -> Keys:
    return make_keys(srv)


@pytest.fixture
def worker(srv: ServerHandle, ks: Keys) -> Iterator[FakeWorker]:
    yield from registered(srv, ks.worker, ks.admin)
