from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.harness import Keys, ServerHandle, make_keys

__all__ = ["Keys"]


@pytest.fixture
def server_factory(tmp_path: Path) -> Iterator[Callable[..., ServerHandle]]:
    """Start as many real servers as a test needs; all are stopped afterwards."""
    started: list[ServerHandle] = []

    def make(data_dir: Path | None = None, **env: str) -> ServerHandle:
        handle = ServerHandle(data_dir=data_dir or tmp_path / f"srv{len(started)}", env_extra=env)
        started.append(handle)
        return handle.start()

    yield make
    for h in started:
        h.stop()


@pytest.fixture(scope="module")
def module_server_factory(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Callable[..., ServerHandle]]:
    """Like server_factory, but the servers live for the whole test module."""
    started: list[ServerHandle] = []

    def make(data_dir: Path | None = None, **env: str) -> ServerHandle:
        handle = ServerHandle(data_dir=data_dir or tmp_path_factory.mktemp("modsrv"), env_extra=env)
        started.append(handle)
        return handle.start()

    yield make
    for h in started:
        h.stop()


@pytest.fixture(scope="module")
def shared_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerHandle]:
    """One server per test module, for tests that don't need a fresh database."""
    handle = ServerHandle(
        data_dir=tmp_path_factory.mktemp("shared"), env_extra={"FETCHML_RATE_LIMIT_PER_MINUTE": "100000"}
    )
    handle.start()
    yield handle
    handle.stop()


@pytest.fixture(scope="module")
def keys(shared_server: ServerHandle) -> Keys:
    return make_keys(shared_server)
