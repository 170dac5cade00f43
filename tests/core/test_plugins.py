"""The pure plugin rules: task checks, the environment per tracker, URL redaction."""

from __future__ import annotations

import pytest

from fetchml.core.errors import ValidationError
from fetchml.core.models import PluginConfig
from fetchml.core.plugins import check_task_plugins, redact_url, task_env, tracker_url, validate

MLFLOW = validate("mlflow", PluginConfig(mode="remote", settings={"tracking_uri": "http://m/", "token": "t"}))
WANDB = validate("wandb", PluginConfig(mode="remote", settings={"api_key": "k", "entity": "lab"}))


@pytest.mark.parametrize(
    ("requested", "field"),
    [
        ({"comet": PluginConfig()}, "plugin_configs.comet"),
        ({"tensorboard": PluginConfig()}, "plugin_configs.tensorboard"),
        ({"mlflow": PluginConfig(settings={"uri": "x"})}, "plugin_configs.mlflow.settings.uri"),
        ({"mlflow": PluginConfig(settings={"experiment": 3})}, "plugin_configs.mlflow.settings.experiment"),
        ({"wandb": PluginConfig(settings={"project": "a\nb"})}, "plugin_configs.wandb.settings.project"),
    ],
)
def test_task_plugin_checks_name_the_field(requested: dict[str, PluginConfig], field: str) -> None:
    with pytest.raises(ValidationError) as exc:
        check_task_plugins(requested, {"mlflow": MLFLOW, "wandb": WANDB})
    assert str(exc.value.message).startswith(field)


def test_environment_per_tracker() -> None:
    env = task_env(
        "t1",
        {"mlflow": {"settings": {"experiment": "e"}}, "wandb": {}, "tensorboard": {}},
        {"mlflow": MLFLOW, "wandb": WANDB},
    )
    assert env == {
        "MLFLOW_TRACKING_URI": "http://m/",
        "MLFLOW_TRACKING_TOKEN": "t",
        "MLFLOW_EXPERIMENT_NAME": "e",
        "MLFLOW_RUN_NAME": "t1",
        "WANDB_API_KEY": "k",
        "WANDB_BASE_URL": "https://api.wandb.ai",
        "WANDB_RUN_ID": "t1",
        "WANDB_MODE": "online",
        "WANDB_ENTITY": "lab",
    }


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("http://h:5000/x", "http://h:5000/x"),
        ("https://u:pw@h/x?token=abc&b=2", "https://u:***@h/x?token=***&b=***"),
        ("https://:pw@h:8443/", "https://:***@h:8443/"),
    ],
)
def test_urls_are_redacted(url: str, shown: str) -> None:
    assert redact_url(url) == shown


@pytest.mark.parametrize(
    ("settings", "url"),
    [
        ({}, "http://127.0.0.1:5000/"),
        ({"host": "0.0.0.0", "port": 5001}, "http://127.0.0.1:5001/"),
        ({"host": "::1", "port": 5002}, "http://[::1]:5002/"),
        ({"host": "0.0.0.0", "public_url": "http://mlflow.lab:5000/"}, "http://mlflow.lab:5000/"),
    ],
)
def test_a_sidecars_tasks_get_its_reachable_address(settings: dict[str, object], url: str) -> None:
    cfg = validate("mlflow", PluginConfig(mode="sidecar", settings=settings))
    assert tracker_url("mlflow", cfg) == url
    env = task_env("t9", {"mlflow": {}}, {"mlflow": cfg})
    assert env["MLFLOW_TRACKING_URI"] == url and env["MLFLOW_RUN_NAME"] == "t9"


@pytest.mark.parametrize("host", ["--port=1", "example.org", "", "1.2.3.4.5"])
def test_a_sidecars_bind_address_is_an_ip_or_localhost(host: str) -> None:
    with pytest.raises(ValidationError) as exc:
        validate("tensorboard", PluginConfig(mode="sidecar", settings={"host": host}))
    assert str(exc.value.message).startswith("settings.host")
