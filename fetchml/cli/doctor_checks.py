"""The checks of `fetchml doctor`: each returns Check results, each problem with its fix.

Statuses: ok; warn (works, or works partly, but deserves attention); fail (blocks use: the
command exits 1); skip (not applicable here, or not checkable with this key).
Libraries load inside the checks: the module is imported only when doctor runs.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from fetchml.client import ClientConfig, FetchmlClient

OK, WARN, FAIL, SKIP = "ok", "warn", "fail", "skip"
GIB = 1024**3
HTTP_TIMEOUT = 5.0  # seconds per request: doctor should answer quickly even when the server does not


@dataclass
class Check:
    name: str
    status: str
    detail: str
    fix: str | None = None
    data: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"name": self.name, "status": self.status, "detail": self.detail}
        if self.fix:
            out["fix"] = self.fix
        if self.data:
            out["data"] = self.data
        return out


KEY_FIX = (
    "set a valid key: `fetchml config set api_key -` (reads it from stdin) or FETCHML_API_KEY; an admin "
    "creates one with `fetchml keys create --user NAME --role user` on the server's host"
)


# --- client side ------------------------------------------------------------------------------


def check_config(server: str | None, api_key: str | None) -> tuple[Check, ClientConfig | None]:
    from fetchml.client.config import config_path, explain, mask_secret, resolve

    path = config_path()
    try:
        settings = explain(server, api_key)
        cfg = resolve(server, api_key)
    except ValueError as exc:
        fix = f"correct it: `fetchml config set KEY VALUE` rewrites {path}; the flag or FETCHML_* variable wins over the file"
        return Check("config", FAIL, str(exc), fix, {"path": str(path)}), None
    data = {
        "path": str(path),
        "exists": path.exists(),
        "server_url": {"value": cfg.server_url, "source": settings["server_url"].source},
        "api_key": {"value": mask_secret(cfg.api_key), "source": settings["api_key"].source},
    }
    where = f"config file {path}" + ("" if path.exists() else " (absent)")
    if cfg.api_key is None:
        return Check(
            "config", FAIL, f"no API key set ({where}): server commands will be refused", KEY_FIX, data
        ), cfg
    detail = (
        f"server {cfg.server_url} ({settings['server_url'].source}), key {mask_secret(cfg.api_key)} "
        f"({settings['api_key'].source}), {where}"
    )
    return Check("config", OK, detail, None, data), cfg


def check_server(c: FetchmlClient) -> tuple[Check, str | None]:
    """Reachability and version (GET /health needs no key). Returns the server's version."""
    from fetchml.core.errors import FetchmlError

    try:
        health = c.health()
    except FetchmlError as exc:
        if exc.code in ("SERVER_UNREACHABLE", "SERVER_TIMEOUT"):
            fix = (
                "start one with `fetchml serve`, or point at the right one: --server URL, FETCHML_SERVER_URL "
                "or `fetchml config set server_url URL`"
            )
            return Check("server", FAIL, exc.message, fix), None
        fix = "check that the URL is a fetchml server's (not a proxy's or another service's)"
        return Check("server", FAIL, f"{c.server_url}: {exc.code}: {exc.message}", fix), None
    data = {"url": c.server_url, "status": health.status, "version": health.version}
    detail = f"{c.server_url} answers: {health.status}, fetchml {health.version}"
    if health.status == "healthy":
        return Check("server", OK, detail, None, data), health.version
    fix = "see the server's log (`fetchml serve` prints it; a full disk or a lost database are the usual causes)"
    return Check("server", WARN if health.status == "degraded" else FAIL, detail, fix, data), health.version


def _key_failure(exc: Any) -> list[Check]:
    if exc.code == "UNAUTHORIZED":
        return [Check("key", FAIL, f"the server refuses this key: {exc.message}", KEY_FIX)]
    return [
        Check("key", FAIL, f"{exc.code}: {exc.message}", "try again; if it persists, see the server's log")
    ]


def check_key(c: FetchmlClient) -> tuple[list[Check], str | None]:
    """The key is accepted, and with which role: probed with an admin-only, then a user request."""
    from fetchml.core.errors import FetchmlError

    try:
        c.scheduler.status()
        role = "admin"
    except FetchmlError as exc:
        if exc.code != "FORBIDDEN":
            return _key_failure(exc), None
        try:
            c.tasks.list(limit=1)
            role = "user"
        except FetchmlError as inner:
            if inner.code != "FORBIDDEN":
                return _key_failure(inner), None
            role = "worker"
    key = Check("key", OK, "the server accepts this key")
    if role == "worker":
        detail = "worker: it runs tasks on a worker host, and cannot submit or list them"
        fix = "for everyday commands use a user or admin key (a worker key belongs to `fetchml worker` only)"
        return [key, Check("role", WARN, detail, fix, {"role": role})], role
    detail = {"admin": "admin: every command", "user": "user: your own tasks; admin commands are refused"}[
        role
    ]
    return [key, Check("role", OK, detail, None, {"role": role})], role


def check_versions(c: FetchmlClient | None, server_version: str | None, role: str | None) -> Check:
    """Client, server and workers on one version (workers are listed with an admin key only)."""
    from fetchml import __version__
    from fetchml.core.errors import FetchmlError

    data: dict[str, Any] = {"client": __version__, "server": server_version}
    if server_version is None:
        return Check("versions", SKIP, f"client {__version__}; server not reached", None, data)
    skew = [] if server_version == __version__ else [f"client {__version__} vs server {server_version}"]
    note = ""
    if c is not None and role == "admin":
        try:
            workers = c.scheduler.workers()
        except FetchmlError as exc:
            workers, note = [], f"; workers not listed ({exc.code})"
        live = [w for w in workers if w.status.value != "offline"]
        data["workers"] = {w.id: w.capabilities.fetchml_version for w in live}
        skew += [
            f"worker {w.id} {w.capabilities.fetchml_version or 'unknown'}"
            for w in live
            if w.capabilities.fetchml_version != server_version
        ]
        note = note or f"; {len(live)} live worker(s) checked"
    else:
        note = "; workers not checked (listing them needs an admin key)"
    if skew:
        fix = (
            "run one fetchml version everywhere: `pip install -U fetchml` on the older side, then restart it"
        )
        return Check("versions", WARN, "version skew: " + ", ".join(skew) + note, fix, data)
    return Check("versions", OK, f"client and server on {__version__}{note}", None, data)


# --- this machine, as a worker host -------------------------------------------------------------


def check_docker() -> tuple[Check, dict[str, Any] | None]:
    """The Docker daemon (DOCKER_HOST or the default socket). Returns `docker info` when it answers."""
    where = os.environ.get("DOCKER_HOST") or "the default socket (/var/run/docker.sock)"
    try:
        import docker
    except ImportError as exc:
        return Check("docker", WARN, f"the docker package is missing: {exc}", "pip install docker"), None
    try:
        client = docker.from_env(timeout=3)
        try:
            info: dict[str, Any] = client.info()
        finally:
            client.close()
    except Exception as exc:  # any failure means no usable daemon; say which
        detail = f"no Docker daemon answers at {where}: {' '.join(str(exc).split())[:300]}"
        fix = (
            "start it (`sudo systemctl start docker`) or fix DOCKER_HOST, and make sure this user may use it "
            "(the docker group); without Docker a worker runs tasks as local processes (--executor local)"
        )
        return Check("docker", WARN, detail, fix, {"docker_host": where}), None
    runtimes = sorted(info.get("Runtimes") or {})
    data = {"version": info.get("ServerVersion"), "runtimes": runtimes}
    return Check("docker", OK, f"Docker {info.get('ServerVersion')} answers at {where}", None, data), info


def check_nvidia_runtime(info: dict[str, Any] | None, gpus: int) -> Check:
    if info is None:
        return Check("nvidia-runtime", SKIP, "no Docker daemon to ask")
    runtimes = sorted(info.get("Runtimes") or {})
    if "nvidia" in runtimes:
        return Check("nvidia-runtime", OK, "Docker has the nvidia runtime", None, {"runtimes": runtimes})
    if not gpus:
        detail = f"Docker has no nvidia runtime ({', '.join(runtimes)}); not needed without NVIDIA GPUs"
        return Check("nvidia-runtime", SKIP, detail, None, {"runtimes": runtimes})
    fix = (
        "install the NVIDIA Container Toolkit, then `sudo nvidia-ctk runtime configure --runtime=docker` "
        "and `sudo systemctl restart docker`"
    )
    detail = f"this machine has {gpus} GPU(s) but Docker has no nvidia runtime: GPU tasks in containers fail"
    return Check("nvidia-runtime", WARN, detail, fix, {"runtimes": runtimes})


def check_gpus() -> tuple[Check, int]:
    """What NVML sees (fetchml/runner/gpus.py, as the worker does). No driver is a warning."""
    from fetchml.runner.gpus import NvmlGpuProvider

    provider = NvmlGpuProvider()
    gpus = provider.detect()
    if gpus:
        listed = ", ".join(f"{g.index}: {g.name} ({g.memory_mb} MiB)" for g in gpus)
        data = {"gpus": [{"index": g.index, "name": g.name, "memory_mb": g.memory_mb} for g in gpus]}
        detail = f"NVML sees {len(gpus)} GPU(s): {listed}"
        if provider.last_error:
            return Check(
                "gpus", WARN, f"{detail}; {provider.last_error}", "check the GPU with nvidia-smi", data
            ), len(gpus)
        return Check("gpus", OK, detail, None, data), len(gpus)
    fix = (
        "on a GPU machine install the NVIDIA driver (nvidia-smi must list the GPUs), or declare them with "
        "`fetchml worker --gpus N --gpu-type TYPE`; a CPU-only worker needs nothing"
    )
    reason = provider.last_error or "NVML answers but sees no GPU"
    return Check("gpus", WARN, f"no GPUs: {reason}", fix), 0


def check_dataset_roots(roots: list[Path]) -> Check:
    if not roots:
        detail = "none set: tasks may name no local dataset sources (URLs only)"
        return Check("dataset-roots", SKIP, detail, None)
    bad = []
    for root in roots:
        if not root.is_dir():
            bad.append(f"{root} is not a folder")
        elif not os.access(root, os.R_OK | os.X_OK):
            bad.append(f"{root} is not readable by this user")
    data = {"roots": [str(r) for r in roots]}
    if bad:
        fix = (
            "create the folder or fix its permissions, or drop it from --dataset-root / FETCHML_DATASET_ROOTS"
        )
        return Check("dataset-roots", WARN, "; ".join(bad), fix, data)
    return Check("dataset-roots", OK, ", ".join(str(r) for r in roots), None, data)


def _existing(path: Path) -> Path:
    """The folder itself, or its nearest existing parent (a dir not created yet lands there)."""
    path = path.expanduser().absolute()
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def check_disk(name: str, path: Path, min_free_gb: float, min_free_percent: float, fix_where: str) -> Check:
    import shutil

    where = _existing(path)
    try:
        usage = shutil.disk_usage(where)
    except OSError as exc:
        return Check(name, WARN, f"{path}: {exc}", f"check {fix_where}")
    free_gb = usage.free / GIB
    percent = 100.0 * usage.free / usage.total if usage.total else 0.0
    data = {"path": str(path), "free_bytes": usage.free, "total_bytes": usage.total}
    detail = f"{path}: {free_gb:.1f} GiB free of {usage.total / GIB:.1f} GiB ({percent:.0f}%)"
    if free_gb < min_free_gb or percent < min_free_percent:
        fix = (
            f"free space there (old artifacts, caches, docker images), or point {fix_where} at a bigger disk"
        )
        limits = f"under {min_free_gb:g} GiB or {min_free_percent:g}%"
        return Check(name, WARN, f"{detail}: {limits}", fix, data)
    return Check(name, OK, detail, None, data)
