"""The trackers' side of a task's environment (docs/plugins.md), prepared by the worker.

- TensorBoard: a `tensorboard/` folder in the outputs, so its event files come back with the
  artifacts (and from there into the server's TensorBoard).
- MLflow: the run is made here, named after the task, and handed to the task as MLFLOW_RUN_ID:
  MLflow's client has no variable for a run *name*, but `mlflow.start_run()` resumes the run
  MLFLOW_RUN_ID names, so an unchanged training script logs into the task's run. When the task
  ends, a run it left RUNNING is closed with the task's outcome.

A tracker that cannot be reached costs the task nothing: it runs without a made run, and the
worker's log says why (never with the token).
"""

from __future__ import annotations

import logging
import os
import re
import time
from pathlib import Path
from typing import Any

import httpx

log = logging.getLogger("fetchml.runner")

TIMEOUT = 5.0


def prepare(env: dict[str, str], output_dir: Path, *, rank0: bool) -> None:
    """Fill in what the assignment's tracker environment leaves to the worker (in place)."""
    if env.pop("FETCHML_TENSORBOARD", None):
        tb_dir = output_dir / "tensorboard"
        tb_dir.mkdir(exist_ok=True)
        owner = output_dir.stat()
        if os.geteuid() == 0:  # the task may run as another user: the folder is the outputs' owner's
            os.chown(tb_dir, owner.st_uid, owner.st_gid)
        env["FETCHML_TENSORBOARD_DIR"] = str(tb_dir)
    if rank0 and env.get("MLFLOW_TRACKING_URI") and env.get("MLFLOW_RUN_NAME") and "MLFLOW_RUN_ID" not in env:
        run_id = _mlflow_create_run(env)
        if run_id:
            env["MLFLOW_RUN_ID"] = run_id


def finish(env: dict[str, str], *, succeeded: bool) -> None:
    """Close the task's MLflow run if the task left it running."""
    run_id = env.get("MLFLOW_RUN_ID")
    if not run_id or not env.get("MLFLOW_TRACKING_URI"):
        return
    try:
        with _client(env) as http:
            info = _call(http, "GET", "runs/get", params={"run_id": run_id})["run"]["info"]
            if info.get("status") == "RUNNING":
                _call(
                    http,
                    "POST",
                    "runs/update",
                    json={
                        "run_id": run_id,
                        "status": "FINISHED" if succeeded else "FAILED",
                        "end_time": int(time.time() * 1000),
                    },
                )
    except (httpx.HTTPError, KeyError, TypeError, ValueError) as exc:
        log.warning("MLflow: could not close run %s: %s", run_id, _why(exc))


def _client(env: dict[str, str]) -> httpx.Client:
    headers = {}
    if env.get("MLFLOW_TRACKING_TOKEN"):
        headers["Authorization"] = f"Bearer {env['MLFLOW_TRACKING_TOKEN']}"
    base = env["MLFLOW_TRACKING_URI"].rstrip("/") + "/api/2.0/mlflow/"
    return httpx.Client(base_url=base, headers=headers, timeout=TIMEOUT, trust_env=False, follow_redirects=False)


def _call(http: httpx.Client, method: str, path: str, **kw: Any) -> Any:
    resp = http.request(method, path, **kw)
    resp.raise_for_status()
    return resp.json()


def _why(exc: Exception) -> str:
    # An error's text may name the URL: a password in it is cut (a token rides in a header).
    return re.sub(r"//[^/@\s]*@", "//***@", f"{type(exc).__name__}: {exc}")[:300]


def _mlflow_create_run(env: dict[str, str]) -> str | None:
    name = env.get("MLFLOW_EXPERIMENT_NAME")
    try:
        with _client(env) as http:
            experiment_id = "0"  # MLflow's Default experiment
            if name:
                experiment_id = _experiment_id(http, name)
            body = {
                "experiment_id": experiment_id,
                "run_name": env["MLFLOW_RUN_NAME"],
                "start_time": int(time.time() * 1000),
                "tags": [
                    {"key": "fetchml.task_id", "value": env.get("FETCHML_TASK_ID", "")},
                    {"key": "fetchml.attempt", "value": env.get("FETCHML_ATTEMPT", "")},
                ],
            }
            return str(_call(http, "POST", "runs/create", json=body)["run"]["info"]["run_id"])
    except (httpx.HTTPError, KeyError, TypeError, ValueError) as exc:
        log.warning("MLflow: could not make the task's run (the task runs without it): %s", _why(exc))
        return None


def _experiment_id(http: httpx.Client, name: str) -> str:
    resp = http.get("experiments/get-by-name", params={"experiment_name": name})
    if resp.status_code == 404:
        created = http.post("experiments/create", json={"name": name})
        if created.is_success:
            return str(created.json()["experiment_id"])
        # Made meanwhile by another task: read it again.
        resp = http.get("experiments/get-by-name", params={"experiment_name": name})
    resp.raise_for_status()
    return str(resp.json()["experiment"]["experiment_id"])
