"""Server fixtures. Every fixture that starts a server runs once per database backend under test
(tests/backends.py): a test using one gets the ids [sqlite] and [postgresql]."""

from __future__ import annotations

import fcntl
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.backends import SQLITE, drop_all_created, require_backend, selected_backends
from tests.harness import Keys, ServerHandle, ServerPool, make_keys
from tests.protocol_kit import FakeWorker

__all__ = ["Keys"]

BACKENDS = selected_backends()


@pytest.fixture(scope="session", autouse=True)
def _drop_leftover_test_databases() -> Iterator[None]:
    yield
    drop_all_created()


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Files holding a `slow` test go first, each file's own order kept. The README runs the suite
    in parallel processes by file (pytest -n, --dist loadfile): started last, one long file would
    leave the other processes idle at the end."""
    slow_files = {item.path for item in items if item.get_closest_marker("slow") is not None}
    # The dockerd restart goes last: it waits for every running Docker test and holds the others
    # off while it runs, which costs least when little else is left.
    restart_files = {item.path for item in items if item.get_closest_marker("dockerd_restart") is not None}
    # Among slow files, those with the longest explicit timeout (the longest tests) start first.
    longest: dict[Path, float] = {}
    for item in items:
        mark = item.get_closest_marker("timeout")
        if mark is not None and mark.args:
            longest[item.path] = max(longest.get(item.path, 0.0), float(mark.args[0]))

    def rank(item: pytest.Item) -> tuple[int, float]:
        group = 2 if item.path in restart_files else 0 if item.path in slow_files else 1
        return group, -longest.get(item.path, 0.0)

    items.sort(key=rank)


# Tests may run in several processes at once (pytest -n, the README's command). One test restarts
# the Docker daemon, which would break a Docker test running beside it: Docker tests hold this
# lock shared, that test exclusively. The file lives in /tmp so every xdist worker sees it.
DOCKERD_LOCK = Path("/tmp/fetchml-tests-dockerd.lock")
DOCKERD_GATE = Path("/tmp/fetchml-tests-dockerd.gate")


@pytest.fixture(autouse=True)
def _dockerd_lock(request: pytest.FixtureRequest) -> Iterator[None]:
    node = request.node
    if node.get_closest_marker("dockerd_restart") is not None:
        mode = fcntl.LOCK_EX
    elif node.get_closest_marker("docker") is not None or "docker_client" in request.fixturenames:
        mode = fcntl.LOCK_SH
    else:
        yield
        return
    # flock prefers no one: a stream of shared holders could keep the restart waiting for the
    # whole run. The restart holds the gate while it waits, and new Docker tests pass the gate
    # first, so it gets the lock as soon as the running ones end.
    with DOCKERD_GATE.open("a") as gate, DOCKERD_LOCK.open("a") as f:
        fcntl.flock(gate, fcntl.LOCK_EX if mode == fcntl.LOCK_EX else fcntl.LOCK_SH)
        if mode == fcntl.LOCK_SH:
            fcntl.flock(gate, fcntl.LOCK_UN)
        fcntl.flock(f, mode)
        if mode == fcntl.LOCK_EX:
            fcntl.flock(gate, fcntl.LOCK_UN)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


@pytest.fixture(scope="module", params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    """The database backend of this module's servers: "sqlite" or "postgresql"."""
    name = str(request.param)
    require_backend(name)
    return name


@pytest.fixture
def server_pool(backend: str) -> Iterator[ServerPool]:
    pool = ServerPool(backend)
    yield pool
    pool.close()


@pytest.fixture(scope="module")
def module_server_pool(backend: str) -> Iterator[ServerPool]:
    pool = ServerPool(backend)
    yield pool
    pool.close()


@pytest.fixture
def server_factory(server_pool: ServerPool, tmp_path: Path) -> Callable[..., ServerHandle]:
    """Start as many real servers as a test needs; all are stopped afterwards. Passing the
    data_dir of an earlier one restarts that server on its database."""

    def make(data_dir: Path | None = None, **env: str) -> ServerHandle:
        data_dir = data_dir or tmp_path / f"srv{len(server_pool.handles)}"
        return server_pool.handle(data_dir, env).start()

    return make


@pytest.fixture
def sqlite_server_factory(tmp_path: Path) -> Iterator[Callable[..., ServerHandle]]:
    """Like server_factory, on SQLite only and not parametrised over backends: for tests of what
    only SQLite has (its file, an external lock on it) or where the database is not the point.
    They run once, instead of skipping their PostgreSQL variant."""
    pool = ServerPool(SQLITE)

    def make(data_dir: Path | None = None, **env: str) -> ServerHandle:
        data_dir = data_dir or tmp_path / f"sqlite-srv{len(pool.handles)}"
        return pool.handle(data_dir, env).start()

    try:
        yield make
    finally:
        pool.close()


@pytest.fixture(scope="module")
def module_server_factory(
    module_server_pool: ServerPool, tmp_path_factory: pytest.TempPathFactory
) -> Callable[..., ServerHandle]:
    """Like server_factory, but the servers live for the whole test module."""

    def make(data_dir: Path | None = None, **env: str) -> ServerHandle:
        return module_server_pool.handle(data_dir or tmp_path_factory.mktemp("modsrv"), env).start()

    return make


@pytest.fixture(scope="module")
def shared_server(module_server_pool: ServerPool, tmp_path_factory: pytest.TempPathFactory) -> ServerHandle:
    """One server per test module (and backend), for tests that don't need a fresh database."""
    return module_server_pool.handle(
        tmp_path_factory.mktemp("shared"), {"FETCHML_RATE_LIMIT_PER_MINUTE": "100000"}
    ).start()


@pytest.fixture
def workers() -> Iterator[list[FakeWorker]]:
    """Fake workers (tests/protocol_kit.py) a test appends here; closed after it."""
    made: list[FakeWorker] = []
    yield made
    for w in made:
        w.close()


@pytest.fixture(scope="module")
def keys(shared_server: ServerHandle) -> Keys:
    return make_keys(shared_server)
