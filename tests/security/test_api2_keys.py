"""OWASP API2 (broken authentication), worker identity: a worker key is bound to one worker name.

Audit finding: a stolen worker key registered itself as a new worker under any name, claimed
another user's task, read the secret in its args, uploaded its own "model.pt" and reported the
task completed. Now a worker key registers only the name it was created for (admins may
register any), acts (heartbeat, claim, report, logs, artifacts) only as that worker, and an
attempt's reports, log lines and artifacts come only from the worker holding it.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from fetchml.core.enums import Role
from tests.harness import ServerHandle, expect_error, run_cli
from tests.protocol_kit import FakeWorker, cancel_leftovers, get_task, submit

CAPS = {"cpu_cores": 4, "memory_gb": 8}


@pytest.fixture(scope="module")
def srv(module_server_factory: Callable[..., ServerHandle]) -> ServerHandle:
    return module_server_factory(FETCHML_RATE_LIMIT_PER_MINUTE="100000")


@pytest.fixture(scope="module")
def admin(srv: ServerHandle) -> str:
    return srv.make_key("root", "admin")


@pytest.fixture(scope="module")
def alice(srv: ServerHandle) -> str:
    return srv.make_key("alice", "user")


@pytest.fixture
def workers(srv: ServerHandle, admin: str) -> Iterator[list[FakeWorker]]:
    made: list[FakeWorker] = []
    yield made
    for w in made:
        w.close()
    cancel_leftovers(srv, admin)


def post(srv: ServerHandle, key: str, path: str, body: Any = None, **kw: Any) -> Any:
    with srv.http(key) as http:
        return http.post(path, json=body, **kw)


def test_a_stolen_worker_key_cannot_register_another_name(srv: ServerHandle) -> None:
    stolen = srv.make_key("rack-1", "worker", worker_name="gpu-a")
    for name in ("gpu-b", "rack-1", "attacker-box"):
        err = expect_error(
            post(srv, stolen, "/v1/workers/register", {"name": name, "capabilities": CAPS}), 403, "FORBIDDEN"
        )
        assert "gpu-a" in err["error"]
    # Nothing was registered under those names.
    assert srv.db_exec("SELECT id FROM workers WHERE id IN ('gpu-b', 'rack-1', 'attacker-box')") == []
    # Its own name works.
    r = post(srv, stolen, "/v1/workers/register", {"name": "gpu-a", "capabilities": CAPS})
    assert r.status_code == 200, r.text


def test_a_worker_key_acts_only_as_its_own_worker(srv: ServerHandle, workers: list[FakeWorker]) -> None:
    victim = FakeWorker(srv, srv.make_key("rack-2", "worker", worker_name="gpu-v"), name="gpu-v")
    workers.append(victim)
    victim.register()
    thief = srv.make_key("rack-3", "worker", worker_name="gpu-t")
    assert (
        post(srv, thief, "/v1/workers/register", {"name": "gpu-t", "capabilities": CAPS}).status_code == 200
    )
    expect_error(post(srv, thief, "/v1/workers/gpu-v/heartbeat", {"active": []}), 403, "FORBIDDEN")
    expect_error(post(srv, thief, "/v1/workers/gpu-v/claim", params={"wait": 0}), 403, "FORBIDDEN")
    # A name nobody registered: refused for the key's binding before any lookup (no existence leak).
    expect_error(post(srv, thief, "/v1/workers/nobody/heartbeat", {"active": []}), 403, "FORBIDDEN")


def test_admins_may_register_any_worker_name(srv: ServerHandle, admin: str) -> None:
    r = post(srv, admin, "/v1/workers/register", {"name": "admin-run-box", "capabilities": CAPS})
    assert r.status_code == 200, r.text


def test_a_second_worker_cannot_report_log_or_upload_for_anothers_attempt(
    srv: ServerHandle, alice: str, admin: str, workers: list[FakeWorker]
) -> None:
    holder = FakeWorker(srv, srv.make_key("rack-4", "worker", worker_name="gpu-h"), name="gpu-h")
    other = FakeWorker(srv, srv.make_key("rack-5", "worker", worker_name="gpu-o"), name="gpu-o")
    workers += [holder, other]
    holder.register()
    other.register()
    t = submit(srv, alice, "secret-job", args="--token s3cr3t", priority=10)
    a = holder.must_claim()
    assert a.task.id == t.id
    holder.run_to(a, "running", "collecting")

    tid = t.id
    expect_error(
        post(
            srv, other.key, f"/v1/tasks/{tid}/report", {"attempt": 1, "status": "completed", "exit_code": 0}
        ),
        403,
        "FORBIDDEN",
    )
    expect_error(
        post(srv, other.key, f"/v1/tasks/{tid}/logs", {"attempt": 1, "start_line": 0, "lines": ["fake"]}),
        403,
        "FORBIDDEN",
    )
    with srv.http(other.key) as http:
        r = http.put(f"/v1/tasks/{tid}/artifacts/model.pt", params={"attempt": 1}, content=os.urandom(64))
    expect_error(r, 403, "FORBIDDEN")

    # Nothing of it landed: still collecting, no log line, no artifact.
    assert get_task(srv, alice, tid).status == "collecting"
    with srv.http(alice) as http:
        assert http.get(f"/v1/tasks/{tid}/logs").json()["lines"] == []
        assert http.get(f"/v1/tasks/{tid}/artifacts").json() == []
    assert not (srv.data_dir / "artifacts" / tid).exists()

    # The holder still can.
    holder.log(a, 0, ["real"])
    done = holder.report(a, "completed", exit_code=0)
    assert done.status == "completed"


def test_the_keys_cli_binds_a_worker_name(srv: ServerHandle, tmp_path: Path) -> None:
    env = {**srv.env(), "HOME": str(tmp_path)}
    args = ["keys", "create", "--user", "rack-6", "--role", "worker", "--worker-name", "gpu-61"]
    if srv.database_url:
        args += ["--database-url", srv.database_url]
    else:
        args += ["--data-dir", str(srv.data_dir)]
    r = run_cli(args, env=env)
    assert r.returncode == 0, r.stderr
    key = r.stdout.strip().splitlines()[-1]
    assert "gpu-61" in r.stderr
    expect_error(
        post(srv, key, "/v1/workers/register", {"name": "rack-6", "capabilities": CAPS}), 403, "FORBIDDEN"
    )
    assert post(srv, key, "/v1/workers/register", {"name": "gpu-61", "capabilities": CAPS}).status_code == 200

    # --worker-name is for worker keys only.
    bad = run_cli([*args[:4], "--role", "user", *args[6:]], env=env)
    assert bad.returncode != 0 and "worker_name" in bad.stderr and "Traceback" not in bad.stderr


def test_the_embedded_workers_process_key_is_bound_to_its_name() -> None:
    """`fetchml run`'s in-process worker: its key, too, registers only its own name."""
    from fetchml.services.keys import KeyService

    keys = KeyService(db=None, writer=None)  # type: ignore[arg-type]  # process keys need neither
    raw = keys.add_process_key("embedded-worker", Role.WORKER, key_id="proc_x", worker_name="embedded-box")
    principal = keys._static[next(iter(keys._static))]
    assert raw.startswith("fml_")
    assert principal.worker_name == "embedded-box"
    assert principal.may_act_as_worker("embedded-box") and not principal.may_act_as_worker("other-box")
