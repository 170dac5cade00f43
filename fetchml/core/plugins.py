"""Tracking plugins (mlflow, tensorboard, wandb): which exist, which modes each offers, what
settings each takes, which of them are secrets, and how a config is checked and redacted.

Pure rules: the service (fetchml.services.plugins) stores and serves configs; nothing here does
I/O. A config is the contract's PluginConfig; `validate` turns what an admin sent into the
stored form (mode and enabled agreeing, defaults filled in) or raises a ValidationError that
names the field.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from typing import Any, Literal
from urllib.parse import urlsplit, urlunsplit

from fetchml.core.errors import ValidationError
from fetchml.core.models import PluginConfig, PluginStatus, Wire

REDACTED = "***"
Mode = Literal["sidecar", "remote", "disabled"]


@dataclass(frozen=True)
class Setting:
    kind: Literal["str", "url", "int", "choice", "host"]
    modes: tuple[str, ...]  # the modes it applies to
    required: bool = False
    secret: bool = False
    default: Any = None
    lo: int = 0
    hi: int = 0
    choices: tuple[str, ...] = ()
    max_len: int = 256


@dataclass(frozen=True)
class Spec:
    name: str
    modes: tuple[str, ...]  # the modes besides `disabled`, the first the default when enabled
    settings: dict[str, Setting]
    extra: str | None = None  # the pip extra a sidecar needs: fetchml[<extra>]


SPECS: dict[str, Spec] = {
    "mlflow": Spec(
        "mlflow",
        ("remote", "sidecar"),
        {
            "tracking_uri": Setting("url", ("remote",), required=True),
            "token": Setting("str", ("remote",), secret=True, max_len=4096),
            "port": Setting("int", ("sidecar",), default=5000, lo=1, hi=65535),
            "host": Setting("host", ("sidecar",), default="127.0.0.1"),
            "public_url": Setting("url", ("sidecar",)),
            "default_experiment": Setting("str", ("remote", "sidecar")),
        },
        extra="mlflow",
    ),
    "tensorboard": Spec(
        "tensorboard",
        ("remote", "sidecar"),
        {
            "url": Setting("url", ("remote",), required=True),
            "port": Setting("int", ("sidecar",), default=6006, lo=1, hi=65535),
            "host": Setting("host", ("sidecar",), default="127.0.0.1"),
            "public_url": Setting("url", ("sidecar",)),
            "reload_interval": Setting("int", ("sidecar",), default=5, lo=1, hi=3600),
        },
        extra="tensorboard",
    ),
    "wandb": Spec(
        "wandb",
        ("remote",),
        {
            "api_key": Setting("str", ("remote",), required=True, secret=True, max_len=4096),
            "base_url": Setting("url", ("remote",), default="https://api.wandb.ai"),
            "project": Setting("str", ("remote",)),
            "entity": Setting("str", ("remote",)),
            "mode": Setting(
                "choice", ("remote",), default="online", choices=("online", "offline", "disabled")
            ),
        },
    ),
}
PLUGIN_NAMES = tuple(SPECS)


class Plugin(Wire):
    """The contract's Plugin."""

    name: str
    enabled: bool
    mode: Mode
    status: PluginStatus
    config: PluginConfig
    requires_restart: bool = False
    version: str | None = None


def _bad(field: str, why: str) -> ValidationError:
    return ValidationError(f"{field}: {why}")


def _check_url(field: str, value: Any) -> str:
    if not isinstance(value, str) or len(value) > 2048:
        raise _bad(field, "must be a URL of at most 2048 characters")
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise _bad(field, "must be an http:// or https:// URL with a host")
    try:
        _ = parts.port
    except ValueError as exc:
        raise _bad(field, "has a bad port") from exc
    return value


def validate(name: str, cfg: PluginConfig) -> PluginConfig:
    """The stored form of an admin's config, or ValidationError naming the field."""
    spec = SPECS[name]
    mode: str | None = cfg.mode
    if mode is None:
        mode = spec.modes[0] if cfg.enabled else "disabled"
    if cfg.enabled is False and mode != "disabled":
        raise _bad("enabled", f"false with mode {mode!r}: use mode 'disabled', or enabled true")
    if mode != "disabled" and mode not in spec.modes:
        raise _bad("mode", f"{name} offers {', '.join(spec.modes)} or disabled, not {mode!r}")
    if cfg.image is not None:
        raise _bad("image", f"{name} takes no image: its sidecar is a local process")
    given = dict(cfg.settings or {})
    out: dict[str, Any] = {}
    for key, value in given.items():
        setting = spec.settings.get(key)
        field = f"settings.{key}"
        if setting is None:
            raise _bad(field, f"unknown setting for {name} (known: {', '.join(spec.settings)})")
        if mode != "disabled" and mode not in setting.modes:
            raise _bad(field, f"applies to mode {' or '.join(setting.modes)}, not {mode}")
        out[key] = _check(field, setting, value)
    if mode != "disabled":
        for key, setting in spec.settings.items():
            if mode not in setting.modes or key in out:
                continue
            if setting.required:
                raise _bad(f"settings.{key}", f"required for {name} in mode {mode}")
            if setting.default is not None:
                out[key] = setting.default
    return PluginConfig(enabled=mode != "disabled", mode=mode, settings=out)


def _check(field: str, setting: Setting, value: Any) -> Any:
    if setting.kind == "host":
        # An address the sidecar binds to: an IP literal or localhost, never something that
        # could read as another command-line option.
        try:
            return str(ipaddress.ip_address(value)) if value != "localhost" else value
        except ValueError:
            raise _bad(field, "must be an IP address (127.0.0.1, 0.0.0.0, ::) or localhost") from None
    if setting.kind == "url":
        return _check_url(field, value)
    if setting.kind == "int":
        if isinstance(value, bool) or not isinstance(value, int) or not setting.lo <= value <= setting.hi:
            raise _bad(field, f"must be an integer from {setting.lo} to {setting.hi}")
        return value
    if setting.kind == "choice":
        if value not in setting.choices:
            raise _bad(field, f"must be one of {', '.join(setting.choices)}")
        return value
    if not isinstance(value, str) or not value or len(value) > setting.max_len:
        raise _bad(field, f"must be a non-empty string of at most {setting.max_len} characters")
    if not setting.secret and any(ord(c) < 32 for c in value):
        raise _bad(field, "must not hold control characters")
    return value


def redact_url(url: str) -> str:
    """A URL with any password in it, and every query value, replaced: tokens ride there."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return REDACTED
    netloc = parts.netloc
    if parts.password is not None:
        netloc = f"{parts.username or ''}:{REDACTED}@{parts.hostname or ''}" + (
            f":{parts.port}" if parts.port else ""
        )
    query = (
        "&".join(f"{kv.split('=', 1)[0]}={REDACTED}" for kv in parts.query.split("&") if kv)
        if parts.query
        else ""
    )
    return urlunsplit((parts.scheme, netloc, parts.path, query, ""))


def redacted(name: str, cfg: PluginConfig) -> PluginConfig:
    """The config as every response, audit event and log line shows it."""
    spec = SPECS[name]
    settings: dict[str, Any] = {}
    for key, value in (cfg.settings or {}).items():
        setting = spec.settings.get(key)
        if setting is not None and setting.secret:
            settings[key] = REDACTED
        elif setting is not None and setting.kind == "url" and isinstance(value, str):
            settings[key] = redact_url(value)
        else:
            settings[key] = value
    return cfg.model_copy(update={"settings": settings})


def secrets_of(name: str, cfg: PluginConfig) -> list[str]:
    """The secret strings a config holds (to keep them out of logs and errors)."""
    spec = SPECS[name]
    out: list[str] = []
    for key, value in (cfg.settings or {}).items():
        setting = spec.settings.get(key)
        if isinstance(value, str) and setting is not None and setting.secret:
            out.append(value)
        elif isinstance(value, str) and setting is not None and setting.kind == "url":
            parts = urlsplit(value)
            if parts.password:
                out.append(parts.password)
    return out


URL_SETTING = {"mlflow": "tracking_uri", "tensorboard": "url", "wandb": "base_url"}


def tracker_url(name: str, cfg: PluginConfig) -> str | None:
    """Where the tracker answers: a remote's URL, or a sidecar's public_url, else its own address."""
    s = cfg.settings or {}
    if cfg.mode == "sidecar":
        return str(s["public_url"]) if s.get("public_url") else sidecar_local_url(cfg)
    value = s.get(URL_SETTING[name])
    return value if isinstance(value, str) and cfg.mode == "remote" else None


def sidecar_local_url(cfg: PluginConfig) -> str:
    """A sidecar's address on the server's own machine (where the supervisor probes it)."""
    s = cfg.settings or {}
    host = str(s.get("host") or "127.0.0.1")
    # A wildcard bind is reached on loopback from this machine; other machines need public_url.
    host = {"0.0.0.0": "127.0.0.1", "::": "[::1]"}.get(host, f"[{host}]" if ":" in host else host)
    return f"http://{host}:{s.get('port')}/"


DISABLED = PluginConfig(enabled=False, mode="disabled", settings={})


def as_model(value: dict[str, Any] | None) -> PluginConfig:
    return PluginConfig.model_validate(value) if value else DISABLED


# What a task may set per plugin in its own plugin_configs[name].settings.
TASK_SETTINGS: dict[str, tuple[str, ...]] = {
    "mlflow": ("experiment",),
    "tensorboard": (),
    "wandb": ("project", "entity"),
}


def check_task_plugins(requested: dict[str, PluginConfig], enabled: dict[str, PluginConfig]) -> None:
    """A task names only enabled plugins, with settings it may set (ValidationError naming the field)."""
    for name, cfg in requested.items():
        field = f"plugin_configs.{name}"
        if name not in SPECS:
            raise _bad(field, f"unknown plugin (plugins: {', '.join(SPECS)})")
        if name not in enabled:
            raise _bad(field, "the plugin is disabled on this server")
        allowed = TASK_SETTINGS[name]
        for key, value in (cfg.settings or {}).items():
            if key not in allowed:
                what = f"(a task may set: {', '.join(allowed)})" if allowed else "(a task sets none)"
                raise _bad(f"{field}.settings.{key}", f"unknown setting {what}")
            if not isinstance(value, str) or not value or len(value) > 256 or any(ord(c) < 32 for c in value):
                raise _bad(f"{field}.settings.{key}", "must be a non-empty string of at most 256 characters")


def task_env(task_id: str, requested: dict[str, Any], enabled: dict[str, PluginConfig]) -> dict[str, str]:
    """The environment a task's process gets for the trackers it names (secrets included: it
    goes only to the worker that runs the task)."""
    env: dict[str, str] = {}
    for name, raw in requested.items():
        cfg = enabled.get(name)
        if cfg is None or cfg.mode not in ("remote", "sidecar"):
            continue
        mine = dict((raw or {}).get("settings") or {})
        s = dict(cfg.settings or {})
        if name == "mlflow":
            env["MLFLOW_TRACKING_URI"] = tracker_url(name, cfg) or ""
            if s.get("token"):
                env["MLFLOW_TRACKING_TOKEN"] = s["token"]
            experiment = mine.get("experiment") or s.get("default_experiment")
            if experiment:
                env["MLFLOW_EXPERIMENT_NAME"] = experiment
            env["MLFLOW_RUN_NAME"] = task_id
        elif name == "wandb":
            env["WANDB_API_KEY"] = s["api_key"]
            env["WANDB_BASE_URL"] = s.get("base_url") or "https://api.wandb.ai"
            env["WANDB_RUN_ID"] = task_id
            env["WANDB_MODE"] = s.get("mode") or "online"
            for key, var in (("project", "WANDB_PROJECT"), ("entity", "WANDB_ENTITY")):
                value = mine.get(key) or s.get(key)
                if value:
                    env[var] = value
        elif name == "tensorboard":
            env["FETCHML_TENSORBOARD"] = "1"  # the worker points FETCHML_TENSORBOARD_DIR into the outputs
    return env
