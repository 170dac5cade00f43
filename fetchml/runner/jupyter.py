"""How a worker launches one Jupyter server: its folders, its port, its command and environment,
and the probe of its /api/status. The life cycle around it is fetchml.runner.services.

The token reaches the server through JUPYTER_TOKEN in its environment, never its argv (which
every local user can read), and is replaced by "***" in every output line the worker keeps.
"""

from __future__ import annotations

import contextlib
import errno
import ipaddress
import os
import re
import socket
import subprocess
import threading
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx

__all__ = [
    "CONTAINER_PORT",
    "CONTAINER_RUNTIME_DIR",
    "JUPYTER_MISSING",
    "PortPool",
    "Probe",
    "check_name",
    "jupyter_importable",
    "last_activity",
    "make_folder",
    "parse_port_range",
    "redact",
    "server_command",
    "server_env",
    "service_url",
]

JUPYTER_MISSING = (
    "this worker cannot run Jupyter services: install fetchml[jupyter] (jupyter-server and "
    "ipykernel) into the interpreter tasks run with ({python})"
)
CONTAINER_PORT = 8888  # the Jupyter server's port inside a container (published on a host port)
CONTAINER_RUNTIME_DIR = "/tmp/fetchml-jupyter-runtime"  # gone with the container
REDACTED = "***"
# User ids and workspace names become folder names on the worker.
_NAME = re.compile(r"^[A-Za-z0-9_-]{1,128}$")


def parse_port_range(text: str) -> tuple[int, int]:
    """A range such as 8900-8999 as (8900, 8999); a single port is a range of one."""
    first, sep, last = text.strip().partition("-")
    try:
        lo, hi = int(first), int(last) if sep else int(first)
    except ValueError:
        raise ValueError(f"invalid port range {text!r}: use FIRST-LAST, e.g. 8900-8999") from None
    if not 1 <= lo <= hi <= 65535:
        raise ValueError(f"invalid port range {text!r}: ports 1-65535, first <= last")
    return lo, hi


def jupyter_importable(python: str, timeout: float = 30.0) -> bool:
    """Whether `python` can import jupyter_server and ipykernel (found, not imported: fast)."""
    code = (
        "import importlib.util as u, sys; "
        "sys.exit(0 if u.find_spec('jupyter_server') and u.find_spec('ipykernel') else 3)"
    )
    try:
        return subprocess.run([python, "-c", code], capture_output=True, timeout=timeout).returncode == 0
    except (OSError, subprocess.SubprocessError):
        return False


def _port_free(bind: str, port: int) -> bool:
    family = socket.AF_INET6 if ":" in bind else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as s:
        try:
            s.bind((bind, port))
        except OSError as exc:
            if exc.errno in (errno.EADDRINUSE, errno.EACCES):
                return False
            raise
    return True


class PortPool:
    """Host ports of the worker's range, each handed to one service at a time. A port is free
    when it can be bound on `bind`; the next search starts after the last port taken, so a port
    just given back is not reused at once."""

    def __init__(self, first: int, last: int, bind: str) -> None:
        self.first, self.last, self.bind = first, last, bind
        self._taken: set[int] = set()
        self._next = first
        self._lock = threading.Lock()

    def take(self) -> int | None:
        with self._lock:
            size = self.last - self.first + 1
            for i in range(size):
                port = self.first + (self._next - self.first + i) % size
                if port in self._taken or not _port_free(self.bind, port):
                    continue
                self._taken.add(port)
                self._next = port + 1 if port < self.last else self.first
                return port
        return None

    def release(self, port: int) -> None:
        with self._lock:
            self._taken.discard(port)


def _connect_host(bind: str) -> str:
    """Where the worker itself reaches a server bound on `bind`."""
    with contextlib.suppress(ValueError):
        ip = ipaddress.ip_address(bind)
        if ip.is_unspecified:
            return "127.0.0.1" if ip.version == 4 else "::1"
    return bind


def _host_in_url(host: str) -> str:
    return f"[{host}]" if ":" in host and not host.startswith("[") else host


def service_url(host: str, port: int, base_url: str) -> str:
    return f"http://{_host_in_url(host)}:{port}{base_url}"


def check_name(kind: str, value: str) -> str:
    if not _NAME.fullmatch(value):
        raise ValueError(f"invalid {kind} {value!r} for a folder name")
    return value


def make_folder(path: Path, mode: int, owner: tuple[int, int] | None = None) -> Path:
    """mkdir (kept if it exists), never through a link; `owner`: chown it to that (uid, gid)."""
    path.mkdir(mode=mode, exist_ok=True)
    if path.is_symlink() or not path.is_dir():
        raise ValueError(f"{path} is not a plain folder")
    if owner is not None:
        os.chown(path, *owner, follow_symlinks=False)
    os.chmod(path, mode, follow_symlinks=False)
    return path


def server_command(*, python: str, port: int, ip: str, base_url: str, root_dir: str) -> list[str]:
    """The Jupyter server's argv: headless, on exactly `port` (no retry on another port, which
    would leave the worker probing the wrong one), token from JUPYTER_TOKEN."""
    return [
        python,
        "-m",
        "jupyter_server",
        f"--ServerApp.ip={ip}",
        f"--ServerApp.port={port}",
        "--ServerApp.port_retries=0",
        f"--ServerApp.base_url={base_url}",
        f"--ServerApp.root_dir={root_dir}",
        "--ServerApp.open_browser=False",
        # Root in a container, or a worker that runs tasks as itself as root: the token guards it.
        "--ServerApp.allow_root=True",
        # Reached under the worker's address or through the fetchml proxy, whose Host headers
        # are not local names; the token is what authenticates.
        "--ServerApp.allow_remote_access=True",
    ]


def server_env(workspace: Path, runtime_dir: str, token: str, service_id: str) -> dict[str, str]:
    """HOME and Jupyter's and IPython's folders in the workspace (kept with it: settings,
    `pip install --user`); the runtime folder (connection files, cookie secret) per service."""
    return {
        "JUPYTER_TOKEN": token,
        "HOME": str(workspace),
        "JUPYTER_CONFIG_DIR": str(workspace / ".jupyter"),
        "JUPYTER_DATA_DIR": str(workspace / ".local" / "share" / "jupyter"),
        "IPYTHONDIR": str(workspace / ".ipython"),
        "JUPYTER_RUNTIME_DIR": runtime_dir,
        "PYTHONUNBUFFERED": "1",
        "FETCHML_SERVICE_ID": service_id,
    }


def redact(line: str, token: str) -> str:
    return line.replace(token, REDACTED) if token else line


class Probe:
    """GET <base_url>api/status with the token. Jupyter does not count these requests as
    activity, so probing never keeps an idle server alive."""

    def __init__(self, bind: str, port: int, base_url: str, token: str) -> None:
        self.url = service_url(_connect_host(bind), port, base_url) + "api/status"
        # trust_env=False: an HTTP(S)_PROXY of the worker must not carry the token elsewhere.
        self._http = httpx.Client(
            timeout=httpx.Timeout(3.0, connect=1.0),
            headers={"Authorization": f"token {token}"},
            trust_env=False,
        )

    def status(self) -> dict[str, Any] | None:
        """The status JSON when the server answers 200, else None."""
        try:
            resp = self._http.get(self.url)
        except httpx.HTTPError:
            return None
        if resp.status_code != 200:
            return None
        try:
            body = resp.json()
        except ValueError:
            return None
        return body if isinstance(body, dict) else None

    def close(self) -> None:
        self._http.close()


def last_activity(status: dict[str, Any] | None) -> datetime | None:
    value = (status or {}).get("last_activity")
    if not isinstance(value, str):
        return None
    try:
        return datetime.fromisoformat(value)
    except ValueError:
        return None
