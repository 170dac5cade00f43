"""Tracker sidecars end to end: a real `fetchml serve` runs `mlflow server` and `tensorboard`,
a local worker runs tasks that log into them, and what they logged is read back from each
tracker's own HTTP API. A killed sidecar turns unhealthy and is restarted; a config change
restarts it; the server's stop stops it; a sidecar whose package is missing is a 422 naming the
extra.

SQLite only: the database plays no part in supervising processes, and each sidecar takes
seconds to start (mlflow ~10 s).
"""

from __future__ import annotations

import os
import shlex
import signal
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import psutil
import pytest

from tests.backends import SQLITE
from tests.e2e.conftest import FAST_LEASES, Cluster
from tests.harness import ServerPool, expect_error, free_port

pytestmark = pytest.mark.slow

MLFLOW_TASK = """
import mlflow
with mlflow.start_run() as run:          # resumes the run fetchml made for this task
    mlflow.log_metric("loss", 0.25, step=1)
    mlflow.log_metric("loss", 0.125, step=2)
print("logged to", run.info.run_name)
"""

TENSORBOARD_TASK = """
import os
from tensorboard.summary import Writer
w = Writer(os.environ["FETCHML_TENSORBOARD_DIR"])
for step in range(3):
    w.add_scalar("loss", 1.0 / (step + 1), step)
w.close()
"""


@pytest.fixture(scope="module")
def sc(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    tmp = tmp_path_factory.mktemp("sidecars")
    pool = ServerPool(SQLITE)
    server = pool.handle(tmp / "server", {**FAST_LEASES, "FETCHML_SIDECAR_PROBE_INTERVAL": "0.5"}).start()
    c = Cluster(
        server=server, tmp=tmp, admin=server.make_key("root", "admin"), user=server.make_key("alice", "user")
    )
    c.start_worker("w1", "--executor", "local")
    try:
        yield c
    finally:
        c.stop()
        pool.close()


def plugin(c: Cluster, name: str) -> dict[str, Any]:
    with c.server.http(c.user) as http:
        return dict(http.get(f"/v1/plugins/{name}").json())


def configure(c: Cluster, name: str, settings: dict[str, Any]) -> dict[str, Any]:
    with c.server.http(c.admin) as http:
        r = http.put(f"/v1/plugins/{name}/config", json={"mode": "sidecar", "settings": settings})
    assert r.status_code == 200, r.text
    return dict(r.json())


def wait_plugin(c: Cluster, name: str, status: str, timeout: float) -> dict[str, Any]:
    return dict(
        c.wait_for(
            lambda: (p := plugin(c, name))["status"].get("status") == status and p,
            timeout=timeout,
            what=f"{name} to be {status}",
        )
    )


def sidecar_procs(c: Cluster, name: str) -> list[psutil.Process]:
    """The sidecar's processes: its leader's command line names this server's data dir."""
    mark = str(c.server.data_dir / "plugins" / name)
    found = []
    for p in psutil.process_iter(["cmdline"]):
        try:
            if any(mark in arg for arg in p.info["cmdline"] or []):
                found.append(p)
                found += p.children(recursive=True)
        except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
            pass
    return found


def test_mlflow_sidecar_holds_the_tasks_metrics_under_its_run_name(sc: Cluster) -> None:
    port = free_port()
    got = configure(sc, "mlflow", {"port": port})
    assert got["mode"] == "sidecar" and got["requires_restart"] is False
    url = f"http://127.0.0.1:{port}/"
    up = wait_plugin(sc, "mlflow", "healthy", 90)
    assert up["status"]["url"] == url and up["status"]["last_check"]
    with sc.server.http(sc.user) as http:
        assert http.get("/v1/plugins/mlflow/health").json()["status"] == "healthy"
    tid = sc.submit(
        entrypoint=shlex.join([sys.executable, "-c", MLFLOW_TASK]),
        plugin_configs={"mlflow": {"settings": {"experiment": "resnet"}}},
    )
    done = sc.wait_status(tid, "completed", "failed", timeout=90)
    assert done["status"] == "completed", (done, sc.logs(tid))
    assert done["plugin_status"]["mlflow"] == {"name": "mlflow", "url": url}
    assert f"logged to {tid}" in "\n".join(sc.logs(tid))
    # Read back from MLflow's own REST API, by the run's name.
    with httpx.Client(base_url=url + "api/2.0/mlflow/", timeout=10, trust_env=False) as mlflow:
        exp = mlflow.get("experiments/get-by-name", params={"experiment_name": "resnet"}).json()
        found = mlflow.post(
            "runs/search",
            json={
                "experiment_ids": [exp["experiment"]["experiment_id"]],
                "filter": f"attributes.run_name = '{tid}'",
            },
        ).json()
    (run,) = found["runs"]
    assert run["info"]["status"] == "FINISHED"
    assert {m["key"]: m["value"] for m in run["data"]["metrics"]} == {"loss": 0.125}
    assert {t["key"]: t["value"] for t in run["data"]["tags"]}["fetchml.task_id"] == tid
    # Its store is in the server's data dir.
    assert (sc.server.data_dir / "plugins" / "mlflow" / "mlflow.db").is_file()


def test_a_killed_sidecar_is_unhealthy_within_10_s_and_restarted(sc: Cluster) -> None:
    wait_plugin(sc, "mlflow", "healthy", 90)
    before = sidecar_procs(sc, "mlflow")
    leader = min(before, key=lambda p: p.create_time())
    os.kill(leader.pid, signal.SIGKILL)  # its uvicorn child lives on, holding the port
    killed = time.monotonic()
    wait_plugin(sc, "mlflow", "unhealthy", 10)
    assert time.monotonic() - killed < 10
    wait_plugin(sc, "mlflow", "healthy", 90)
    after = sidecar_procs(sc, "mlflow")
    assert after and not {p.pid for p in before} & {p.pid for p in after}  # the old group is gone
    assert not any(p.is_running() and p.status() != psutil.STATUS_ZOMBIE for p in before)


def test_tensorboard_sidecar_serves_the_tasks_scalars(sc: Cluster) -> None:
    port = free_port()
    configure(sc, "tensorboard", {"port": port, "reload_interval": 1})
    wait_plugin(sc, "tensorboard", "healthy", 60)
    tid = sc.submit(
        entrypoint=shlex.join([sys.executable, "-c", TENSORBOARD_TASK]), plugin_configs={"tensorboard": {}}
    )
    done = sc.wait_status(tid, "completed", "failed", timeout=60)
    assert done["status"] == "completed", (done, sc.logs(tid))
    with httpx.Client(base_url=f"http://127.0.0.1:{port}/", timeout=10, trust_env=False) as tb:

        def scalars() -> list[list[float]] | None:
            r = tb.get("data/plugin/scalars/scalars", params={"run": tid, "tag": "loss"})
            return r.json() if r.status_code == 200 and r.json() else None

        points = sc.wait_for(scalars, timeout=30, what="TensorBoard to load the task's scalars")
    assert [(p[1], round(p[2], 3)) for p in points] == [(0, 1.0), (1, 0.5), (2, 0.333)]


def test_a_config_change_restarts_the_sidecar_on_its_new_settings(sc: Cluster) -> None:
    wait_plugin(sc, "tensorboard", "healthy", 60)
    old_url = plugin(sc, "tensorboard")["status"]["url"]
    old = {p.pid for p in sidecar_procs(sc, "tensorboard")}
    port = free_port()
    configure(sc, "tensorboard", {"port": port, "reload_interval": 2})
    up = wait_plugin(sc, "tensorboard", "healthy", 60)
    assert up["status"]["url"] == f"http://127.0.0.1:{port}/" != old_url
    assert not old & {p.pid for p in sidecar_procs(sc, "tensorboard")}
    with pytest.raises(httpx.ConnectError):
        httpx.get(old_url + "data/environment", timeout=5, trust_env=False)
    # A setting that only tasks read (no new command line) restarts nothing.
    pids = {p.pid for p in sidecar_procs(sc, "mlflow")}
    port_now = plugin(sc, "mlflow")["config"]["settings"]["port"]
    configure(sc, "mlflow", {"port": port_now, "default_experiment": "vision"})
    time.sleep(1.5)  # three probe intervals: a restart would have begun
    assert {p.pid for p in sidecar_procs(sc, "mlflow")} == pids


def test_disabling_a_sidecar_stops_it_and_the_servers_stop_stops_the_rest(sc: Cluster) -> None:
    wait_plugin(sc, "tensorboard", "healthy", 60)
    with sc.server.http(sc.admin) as http:
        assert http.delete("/v1/plugins/tensorboard/config").status_code == 204
    sc.wait_for(lambda: not sidecar_procs(sc, "tensorboard"), timeout=20, what="tensorboard to stop")
    assert plugin(sc, "tensorboard")["status"]["status"] == "stopped"
    running = sidecar_procs(sc, "mlflow")
    assert running
    sc.stop()
    sc.server.stop()
    _gone, alive = psutil.wait_procs(running, timeout=15)
    assert not alive


def test_a_sidecar_whose_package_is_missing_is_422_naming_the_extra(
    sqlite_server_factory: Any, tmp_path: Path
) -> None:
    # The server's Python cannot import mlflow: a finder ahead of every other refuses it.
    shadow = tmp_path / "shadow"
    shadow.mkdir()
    (shadow / "sitecustomize.py").write_text(
        "import sys\n"
        "class _NoMlflow:\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name.split('.')[0] == 'mlflow':\n"
        "            raise ModuleNotFoundError(name)\n"
        "sys.meta_path.insert(0, _NoMlflow())\n"
    )
    srv = sqlite_server_factory(PYTHONPATH=str(shadow))
    admin = srv.make_key("root", "admin")
    with srv.http(admin) as http:
        r = http.put("/v1/plugins/mlflow/config", json={"mode": "sidecar", "settings": {"port": free_port()}})
        err = expect_error(r, 422, "VALIDATION_ERROR")
        assert "fetchml[mlflow]" in err["error"] and "mode" in err["error"], err
        assert http.get("/v1/plugins/mlflow").json()["mode"] == "disabled"  # nothing stored
