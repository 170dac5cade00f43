"""`fetchml plugins` as subprocesses against a real server of its own (configs are global)."""

from __future__ import annotations

import json
from collections.abc import Callable

import pytest

from tests.cli.conftest import assert_ok, cli_env, run
from tests.harness import ServerHandle, free_port


@pytest.fixture(scope="module")
def srv(module_server_factory: Callable[..., ServerHandle]) -> ServerHandle:
    return module_server_factory(FETCHML_RATE_LIMIT_PER_MINUTE="100000")


def test_set_show_health_disable(srv: ServerHandle) -> None:
    admin, user = srv.make_key("root", "admin"), srv.make_key("alice", "user")
    dead = f"http://127.0.0.1:{free_port()}/"
    out = assert_ok(
        run(
            ["plugins", "set", "wandb", "api_key=SEKRIT-42", f"base_url={dead}", "project=p"],
            cli_env(srv, admin),
        )
    )
    assert "wandb: remote" in out.stdout
    shown = assert_ok(run(["plugins", "show", "wandb"], cli_env(srv, user))).stdout
    assert "api_key = ***" in shown and "SEKRIT" not in shown
    listed = json.loads(assert_ok(run(["plugins", "list", "--json"], cli_env(srv, user))).stdout)
    assert {p["name"] for p in listed} == {"mlflow", "tensorboard", "wandb"}
    bad = run(["plugins", "health", "wandb"], cli_env(srv, user))
    assert bad.returncode == 1 and "wandb: unhealthy" in bad.stdout
    refused = run(["plugins", "set", "wandb", "colour=red", "api_key=x"], cli_env(srv, admin))
    assert refused.returncode != 0 and "settings.colour" in refused.stderr
    forbidden = run(["plugins", "disable", "wandb"], cli_env(srv, user))
    assert forbidden.returncode != 0 and "FORBIDDEN" in forbidden.stderr
    assert "wandb: disabled" in assert_ok(run(["plugins", "disable", "wandb"], cli_env(srv, admin))).stdout
    assert "no plugin is enabled" in assert_ok(run(["plugins", "health"], cli_env(srv, user))).stdout
    unknown = run(["plugins", "show", "comet"], cli_env(srv, user))
    assert unknown.returncode != 0 and "NOT_FOUND" in unknown.stderr


def test_submit_with_plugins(srv: ServerHandle) -> None:
    admin, user = srv.make_key("root2", "admin"), srv.make_key("bob", "user")
    env = cli_env(srv, user)
    args = ["submit", "tracked", "-e", "train.py", "--json"]
    disabled = run([*args, "--plugin", "tensorboard"], env)
    assert disabled.returncode != 0 and "plugin_configs.tensorboard" in disabled.stderr
    bad = run([*args, "--plugin", "mlflow:experiment"], env)
    assert bad.returncode == 2 and "--plugin" in bad.stderr
    assert_ok(run(["plugins", "set", "mlflow", "tracking_uri=http://127.0.0.1:9/"], cli_env(srv, admin)))
    task = json.loads(assert_ok(run([*args, "--plugin", "mlflow:experiment=resnet"], env)).stdout)
    assert task["plugin_configs"] == {"mlflow": {"settings": {"experiment": "resnet"}}}
    assert task["plugin_status"]["mlflow"]["url"] == "http://127.0.0.1:9/"
