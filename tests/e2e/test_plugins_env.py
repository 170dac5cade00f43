"""Tracking plugins end to end: a real server and local worker run a task that names W&B and
MLflow (remote mode). A loopback HTTP stub plays the W&B host (it cannot be reached from here).
The task gets each tracker's environment and uses the W&B key against the stub; the key never
comes back in any response, audit event or log."""

from __future__ import annotations

import base64
import shlex
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from tests.e2e.conftest import Cluster

pytestmark = pytest.mark.slow

KEY = "wandb-key-NEVER-SHOWN-5f3a9c"

# The task: print what it got (never the key), then call the W&B host as the client would.
TASK = """
import base64, os, urllib.request
e = os.environ
print("run=" + e["WANDB_RUN_ID"], "project=" + e["WANDB_PROJECT"], "mode=" + e["WANDB_MODE"])
print("mlflow=" + e["MLFLOW_TRACKING_URI"], "exp=" + e["MLFLOW_EXPERIMENT_NAME"], "name=" + e["MLFLOW_RUN_NAME"])
print("tb=" + str(os.path.isdir(e["FETCHML_TENSORBOARD_DIR"])))
auth = base64.b64encode(("api:" + e["WANDB_API_KEY"]).encode()).decode()
req = urllib.request.Request(e["WANDB_BASE_URL"] + "graphql", data=b"{}", headers={"Authorization": "Basic " + auth})
print("stub=" + urllib.request.urlopen(req, timeout=10).read().decode())
"""


class _WandbStub(BaseHTTPRequestHandler):
    seen: list[str] = []

    def do_GET(self) -> None:
        self.send_response(200)
        self.end_headers()

    def do_POST(self) -> None:
        self.seen.append(self.headers.get("Authorization", ""))
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        self.send_response(200)
        self.end_headers()
        self.wfile.write(b"ok")

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def stub() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _WandbStub)
    _WandbStub.seen = []
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/"
    server.shutdown()


def test_a_task_gets_the_trackers_environment_and_the_key_stays_secret(cluster: Cluster, stub: str) -> None:
    with cluster.server.http(cluster.admin) as http:
        for name, settings in (
            ("wandb", {"api_key": KEY, "base_url": stub, "project": "default-project"}),
            ("mlflow", {"tracking_uri": "http://127.0.0.1:9/", "default_experiment": "default-exp"}),
            ("tensorboard", {"url": "http://127.0.0.1:9/"}),
        ):
            r = http.put(f"/v1/plugins/{name}/config", json={"mode": "remote", "settings": settings})
            assert r.status_code == 200, r.text
    cluster.start_worker("pw", "--executor", "local")
    tid = cluster.submit(
        entrypoint=shlex.join(["python3", "-c", TASK]),
        plugin_configs={
            "wandb": {"settings": {"project": "resnet"}},
            "mlflow": {"settings": {"experiment": "resnet-exp"}},
            "tensorboard": {},
        },
    )
    done = cluster.wait_status(tid, "completed", "failed", timeout=60)
    lines = cluster.logs(tid)
    assert done["status"] == "completed", (done, lines)
    text = "\n".join(lines)
    assert f"run={tid} project=resnet mode=online" in text
    assert f"mlflow=http://127.0.0.1:9/ exp=resnet-exp name={tid}" in text
    assert "tb=True" in text and "stub=ok" in text
    assert _WandbStub.seen == ["Basic " + base64.b64encode(f"api:{KEY}".encode()).decode()]
    assert done["plugin_status"]["wandb"] == {"name": "wandb", "url": stub}
    # Nowhere back: the task, its log, the plugin routes, the audit log, the server's and the worker's logs.
    with cluster.server.http(cluster.admin) as http:
        answers = [
            http.get(f"/v1/tasks/{tid}").text,
            http.get(f"/v1/tasks/{tid}/logs").text,
            http.get("/v1/plugins").text,
            http.get("/v1/plugins/wandb/config").text,
            http.get("/v1/audit/events", params={"include_extended": "true", "limit": 1000}).text,
        ]
    answers += [cluster.server.log_path.read_text(), cluster.worker_log("pw")]
    assert all(KEY not in a for a in answers)


def test_a_task_naming_a_disabled_or_unknown_plugin_is_422(cluster: Cluster) -> None:
    with cluster.server.http(cluster.user) as http:
        for configs, field in (
            ({"wandb": {}}, "plugin_configs.wandb"),
            ({"comet": {}}, "plugin_configs.comet"),
        ):
            r = http.post("/v1/tasks", json={"job_name": "p", "plugin_configs": configs})
            assert r.status_code == 422 and field in r.json()["error"], r.text
        assert http.get("/v1/tasks").json()["total"] == 0  # nothing half-written
