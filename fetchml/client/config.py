"""Where the client finds its server and key: flag > environment > config file > default."""

from __future__ import annotations

import os
import sys
import tomllib
from typing import TYPE_CHECKING, Any, NamedTuple
from urllib.parse import urlsplit

if TYPE_CHECKING:
    from pathlib import Path

# Every client command reads this module first, so it loads no pathlib, dataclasses or
# platformdirs of its own (~20 ms; issue 17): paths are strings until a caller wants a Path.

DEFAULT_SERVER_URL = "http://127.0.0.1:9101"
DEFAULT_TIMEOUT = 30.0
CONFIG_KEYS = ("server_url", "api_key", "timeout")
ENV_VARS = {"server_url": "FETCHML_SERVER_URL", "api_key": "FETCHML_API_KEY", "timeout": "FETCHML_TIMEOUT"}
DEFAULTS: dict[str, str | float | None] = {
    "server_url": DEFAULT_SERVER_URL,
    "api_key": None,
    "timeout": DEFAULT_TIMEOUT,
}


def config_file() -> str:
    """The config file's path: FETCHML_CONFIG, else platformdirs' user config folder."""
    override = os.environ.get("FETCHML_CONFIG")
    if override:
        return override
    if sys.platform == "linux" and "ANDROID_DATA" not in os.environ:
        # platformdirs' answer on Linux (XDG), without importing it; a test checks they agree.
        base = os.environ.get("XDG_CONFIG_HOME", "").strip() or os.path.expanduser("~/.config")
        return os.path.join(base, "fetchml", "config.toml")
    import platformdirs

    return os.path.join(platformdirs.user_config_dir("fetchml", appauthor=False), "config.toml")


def config_path() -> Path:
    from pathlib import Path

    return Path(config_file())


def load_file(path: Path | str | None = None) -> dict[str, Any]:
    path = path or config_file()
    try:
        with open(path, "rb") as fh:
            _owner_only(fh.fileno())
            return tomllib.load(fh)
    except FileNotFoundError:
        return {}
    except tomllib.TOMLDecodeError as exc:
        raise ValueError(f"config file {path} is not valid TOML: {exc}") from exc


def _owner_only(fd: int) -> None:
    """The config file may hold an API key: make it 0600 if it is ours and readable by others
    (an older fetchml, or a file written by hand under a 022 umask)."""
    import contextlib
    import stat

    st = os.fstat(fd)
    if st.st_mode & 0o077 and st.st_uid == os.geteuid() and stat.S_ISREG(st.st_mode):
        with contextlib.suppress(OSError):  # a read-only filesystem: leave it as it is
            os.fchmod(fd, 0o600)


def check_server_url(url: str) -> str:
    """An http(s) URL with a host; returned without a trailing slash."""
    parts = urlsplit(url.strip())
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ValueError(f"invalid server URL {url!r}: expected http://HOST:PORT or https://HOST")
    return url.strip().rstrip("/")


def check_timeout(value: str | float) -> float:
    try:
        seconds = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"invalid timeout {value!r}: expected a number of seconds") from None
    if not seconds > 0 or seconds == float("inf"):
        raise ValueError(f"invalid timeout {value!r}: expected a positive number of seconds")
    return seconds


def check_api_key(key: str) -> str:
    """A key must fit in an HTTP header: visible ASCII, no spaces."""
    if not key or not all("!" <= ch <= "~" for ch in key):
        raise ValueError("invalid API key: expected visible ASCII characters without spaces (fml_...)")
    return key


def check_value(key: str, value: str) -> str | float:
    """Validate one config value as `fetchml config set` receives it; returns what is stored."""
    if key not in CONFIG_KEYS:
        raise ValueError(f"unknown config key {key!r}; known keys: {', '.join(CONFIG_KEYS)}")
    if key == "server_url":
        return check_server_url(value)
    if key == "timeout":
        return check_timeout(value)
    if not value.strip():
        raise ValueError("api_key may not be empty; use `fetchml config unset api_key` to remove it")
    return check_api_key(value.strip())


def save_value(key: str, value: str | None, path: Path | None = None) -> Path:
    return save_values({key: value}, path)


def save_values(values: dict[str, str | None], path: Path | None = None) -> Path:
    """Set (or, for None, remove) several keys in one atomic rewrite of the file."""
    import tomli_w

    for key in values:
        if key not in CONFIG_KEYS:
            raise ValueError(f"unknown config key {key!r}; known keys: {', '.join(CONFIG_KEYS)}")
    path = path or config_path()
    data = load_file(path)
    for key, value in values.items():
        if value is None:
            data.pop(key, None)
        else:
            data[key] = check_value(key, value)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    # The file may hold an API key: readable by its owner only.
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as fh:
        tomli_w.dump(data, fh)
    tmp.replace(path)
    return path


class Setting(NamedTuple):
    """One effective client setting and where it came from: flag, env, file or default."""

    key: str
    value: str | float | None
    source: str


def explain(
    server_url: str | None = None, api_key: str | None = None, timeout: float | None = None
) -> dict[str, Setting]:
    """The effective value of every config key, with its source, in precedence order."""
    file = load_file()
    flags: dict[str, Any] = {"server_url": server_url, "api_key": api_key, "timeout": timeout}
    out: dict[str, Setting] = {}
    for key in CONFIG_KEYS:
        env = os.environ.get(ENV_VARS[key])
        if flags[key] not in (None, ""):
            out[key] = Setting(key, flags[key], "flag")
        elif env:
            out[key] = Setting(key, env, "env")
        elif file.get(key) not in (None, ""):
            out[key] = Setting(key, file[key], "file")
        else:
            out[key] = Setting(key, DEFAULTS[key], "default")
    return out


def mask_secret(value: str | None, shown: int = 12) -> str | None:
    """The first `shown` characters and an ellipsis; never more than half of a short value."""
    if value is None:
        return None
    return value[: min(shown, len(value) // 2)] + "…"


class ClientConfig(NamedTuple):
    server_url: str
    api_key: str | None
    timeout: float = DEFAULT_TIMEOUT


def resolve(
    server_url: str | None = None, api_key: str | None = None, timeout: float | None = None
) -> ClientConfig:
    settings = explain(server_url, api_key, timeout)
    url = check_server_url(str(settings["server_url"].value))
    key = settings["api_key"].value
    return ClientConfig(
        server_url=url,
        api_key=check_api_key(str(key)) if key is not None else None,
        timeout=check_timeout(settings["timeout"].value or DEFAULT_TIMEOUT),
    )
