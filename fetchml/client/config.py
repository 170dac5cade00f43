"""Where the client finds its server and key: flag > environment > config file > default."""

from __future__ import annotations

import os
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

DEFAULT_SERVER_URL = "http://127.0.0.1:9101"
CONFIG_KEYS = ("server_url", "api_key", "timeout")


def config_path() -> Path:
    override = os.environ.get("FETCHML_CONFIG")
    if override:
        return Path(override)
    import platformdirs

    return Path(platformdirs.user_config_dir("fetchml", appauthor=False)) / "config.toml"


def load_file(path: Path | None = None) -> dict[str, Any]:
    path = path or config_path()
    try:
        with path.open("rb") as fh:
            return tomllib.load(fh)
    except FileNotFoundError:
        return {}
    except tomllib.TOMLDecodeError as exc:
        raise ValueError(f"config file {path} is not valid TOML: {exc}") from exc


def save_value(key: str, value: str | None, path: Path | None = None) -> Path:
    import tomli_w

    if key not in CONFIG_KEYS:
        raise ValueError(f"unknown config key {key!r}; known keys: {', '.join(CONFIG_KEYS)}")
    path = path or config_path()
    data = load_file(path)
    if value is None:
        data.pop(key, None)
    else:
        data[key] = float(value) if key == "timeout" else value
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    # The file may hold an API key: readable by its owner only.
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as fh:
        tomli_w.dump(data, fh)
    tmp.replace(path)
    return path


@dataclass(frozen=True)
class ClientConfig:
    server_url: str
    api_key: str | None
    timeout: float = 30.0


def resolve(
    server_url: str | None = None, api_key: str | None = None, timeout: float | None = None
) -> ClientConfig:
    file = load_file()
    url = server_url or os.environ.get("FETCHML_SERVER_URL") or file.get("server_url") or DEFAULT_SERVER_URL
    key = api_key or os.environ.get("FETCHML_API_KEY") or file.get("api_key")
    t = timeout or float(os.environ.get("FETCHML_TIMEOUT") or file.get("timeout") or 30.0)
    return ClientConfig(server_url=str(url).rstrip("/"), api_key=key, timeout=t)
