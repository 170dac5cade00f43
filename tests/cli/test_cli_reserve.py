"""`fetchml reserve create | list` as subprocesses against a real server."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator

import pytest

from tests.cli.conftest import Result, assert_ok, assert_one_line_error, cli_env, run
from tests.harness import Keys, ServerHandle
from tests.protocol_kit import FakeWorker, cancel_leftovers, unique

Cli = Callable[..., Result]
RESERVATION_FIELDS = {"id", "user_id", "gpu_count", "gpu_type", "node_count", "expires_at", "status"}


@pytest.fixture
def box(shared_server: ServerHandle, keys: Keys) -> Iterator[tuple[FakeWorker, str]]:
    gpu_type = unique("V")
    worker = FakeWorker(shared_server, keys.worker)
    worker.register(gpus=[0, 1], gpu_type=gpu_type)
    yield worker, gpu_type
    worker.close()
    cancel_leftovers(shared_server, keys.admin)


def test_help() -> None:
    out = assert_ok(run(["reserve", "--help"], cli_env())).stdout
    assert " create " in out and " list " in out
    assert "--gpus" in assert_ok(run(["reserve", "create", "--help"], cli_env())).stdout


def test_create_and_list(cli: Cli, keys: Keys, box: tuple[FakeWorker, str]) -> None:
    w, gpu_type = box
    out = assert_ok(
        cli(["reserve", "create", "--gpus", "1", "--gpu-type", gpu_type, "-m", "10"], keys.admin)
    ).stdout
    assert out.startswith("Reservation r-") and f"{w.name}: 0" in out, out
    rid = out.split()[1].rstrip(":")
    made = json.loads(
        assert_ok(
            cli(["reserve", "create", "--gpus", "1", "--gpu-type", gpu_type, "--json"], keys.admin)
        ).stdout
    )
    assert made.keys() >= RESERVATION_FIELDS and made["gpus"] == {w.name: [1]}
    listed = json.loads(assert_ok(cli(["reserve", "list", "--json"], keys.admin)).stdout)
    assert {rid, made["id"]} <= {r["id"] for r in listed}
    table = assert_ok(cli(["reserve", "list"], keys.admin)).stdout
    assert rid in table and "active" in table
    # Nothing left of that type: CONFLICT, one line, exit 1.
    err = assert_one_line_error(
        cli(["reserve", "create", "--gpus", "1", "--gpu-type", gpu_type], keys.admin), "CONFLICT", 1
    )
    assert "Not enough free capacity" in err


def test_users_may_not_reserve_and_bad_input_is_a_usage_error(cli: Cli, keys: Keys) -> None:
    assert_one_line_error(cli(["reserve", "list"], keys.user), "FORBIDDEN", 1)
    assert_one_line_error(cli(["reserve", "create", "--gpus", "1"], keys.user), "FORBIDDEN", 1)
    r = cli(["reserve", "create", "--gpus", "0"], keys.admin)
    assert r.returncode == 2, r
