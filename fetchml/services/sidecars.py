"""Tracker sidecars (docs/plugins.md): the server starts `mlflow server` and `tensorboard` for
the plugins configured in mode `sidecar`, probes them, restarts them when they die or hang (with
backoff), restarts them when their config changes, and stops them with the server.

Each sidecar runs in a session of its own, so a stop or a crash takes its whole process group
(mlflow's uvicorn child included) and leaves nothing holding the port. Process times are the
machine's real ones (time.monotonic); `last_check` is the service clock's, like every other
timestamp the API returns.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

import httpx

from fetchml.core.clock import Clock
from fetchml.core.models import PluginConfig, PluginStatus
from fetchml.core.plugins import redact_url, sidecar_local_url, tracker_url
from fetchml.services.base import read
from fetchml.services.plugins import HEALTH_PATH, configs, reachable
from fetchml.store.db import Database

log = logging.getLogger("fetchml.plugins")

SIDECAR_PLUGINS = ("mlflow", "tensorboard")
STARTUP_GRACE = 90.0  # seconds a sidecar may take to answer its first probe (mlflow: ~10 s)
HANG_LIMIT = 20.0  # seconds a started sidecar may fail its probes before it is restarted
BACKOFF = (1.0, 2.0, 4.0, 8.0, 16.0, 30.0)
STABLE_AFTER = 60.0  # seconds healthy after which the backoff starts again from its first step
STOP_GRACE = 10.0
IDLE_POLL = 10.0  # with no sidecar wanted: how often another server's config change is noticed
LOG_MAX_BYTES = 8 * 1024 * 1024


def sidecar_dir(data_dir: Path, name: str) -> Path:
    return data_dir / "plugins" / name


def tensorboard_logdir(data_dir: Path) -> Path:
    """Where tasks' TensorBoard files land (one folder per task), and what TensorBoard serves."""
    return sidecar_dir(data_dir, "tensorboard") / "runs"


def command(name: str, cfg: PluginConfig, data_dir: Path) -> list[str]:
    """The sidecar's command line; a change in it is what restarts a running sidecar."""
    s = cfg.settings or {}
    home = sidecar_dir(data_dir, name)
    host, port = str(s.get("host") or "127.0.0.1"), str(s.get("port"))
    if name == "mlflow":
        argv = [
            sys.executable, "-m", "mlflow", "server", "--host", host, "--port", port, "--workers", "1",
            "--backend-store-uri", f"sqlite:///{(home / 'mlflow.db').as_posix()}",
            "--artifacts-destination", (home / "artifacts").as_posix(),
        ]  # fmt: skip
        public = s.get("public_url")
        if public:
            # mlflow refuses Host headers it does not know (DNS rebinding); the public name is one.
            netloc = httpx.URL(str(public)).netloc.decode()
            argv += ["--allowed-hosts", f"{netloc},localhost:{port},127.0.0.1:{port},[::1]:{port}"]
        return argv
    return [
        sys.executable, "-m", "tensorboard.main", "--logdir", tensorboard_logdir(data_dir).as_posix(),
        "--host", host, "--port", port, "--reload_interval", str(s.get("reload_interval") or 5),
    ]  # fmt: skip


def sidecar_env() -> dict[str, str]:
    # The server's own secrets (database URL, keys) are no business of a tracker.
    env = {k: v for k, v in os.environ.items() if not k.startswith("FETCHML_")}
    env["MLFLOW_SERVER_ENABLE_JOB_EXECUTION"] = "false"  # no background job runner to supervise
    env["PYTHONUNBUFFERED"] = "1"
    return env


@dataclass
class Sidecar:
    name: str
    argv: list[str] = field(default_factory=list)
    url: str | None = None  # where tasks reach it
    probe_url: str = ""  # where this server probes it
    proc: asyncio.subprocess.Process | None = None
    status: str = "stopped"
    last_check: datetime | None = None
    started: float = 0.0
    healthy_since: float | None = None
    failing_since: float | None = None
    failures: int = 0
    next_start: float = 0.0


class SidecarSupervisor:
    def __init__(
        self,
        db: Database,
        data_dir: Path,
        clock: Clock,
        *,
        enabled: bool = True,
        interval: float = 2.0,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.db = db
        self.data_dir = data_dir
        self.clock = clock
        self.enabled = enabled
        self.interval = interval
        self._now = monotonic
        self._cars: dict[str, Sidecar] = {n: Sidecar(n) for n in SIDECAR_PLUGINS}
        self._kick = asyncio.Event()

    def kick(self) -> None:
        """A config changed here: reconcile now rather than at the next poll."""
        self._kick.set()

    def status(self, name: str, cfg: PluginConfig) -> PluginStatus | None:
        """The sidecar's state for `cfg`, the stored config: one this supervisor has not taken
        up yet (changed a moment ago, here or on another server) is `starting`."""
        car = self._cars.get(name)
        if car is None or not self.enabled or cfg.mode != "sidecar":
            return None
        url = tracker_url(name, cfg)
        if car.argv != command(name, cfg, self.data_dir):
            return PluginStatus(name=name, status="starting", url=redact_url(url) if url else None)
        return PluginStatus(
            name=name,
            status=car.status,
            url=redact_url(url) if url else None,
            last_check=car.last_check,
        )

    async def run(self, stop: asyncio.Event) -> None:
        if not self.enabled:
            return
        try:
            while not stop.is_set():
                try:
                    await self.tick()
                except Exception:  # a bad tick must not end supervision
                    log.exception("sidecar supervision failed; trying again")
                wanted = any(c.argv for c in self._cars.values())
                self._kick.clear()
                waiter = asyncio.ensure_future(self._kick.wait())
                stopper = asyncio.ensure_future(stop.wait())
                await asyncio.wait(
                    {waiter, stopper},
                    timeout=self.interval if wanted else IDLE_POLL,
                    return_when=asyncio.FIRST_COMPLETED,
                )
                waiter.cancel()
                stopper.cancel()
        finally:
            await self.stop_all()

    async def tick(self) -> None:
        found = await read(self.db, configs)
        for name, car in self._cars.items():
            cfg = found[name]
            argv = command(name, cfg, self.data_dir) if cfg.mode == "sidecar" else []
            if car.argv != argv:
                if car.proc is not None:
                    log.info("plugin %s: config changed, stopping its sidecar", name)
                    await self._stop(car)
                car.argv, car.failures, car.next_start = argv, 0, 0.0
                car.url = tracker_url(name, cfg) if argv else None
                car.probe_url = sidecar_local_url(cfg) + HEALTH_PATH[name] if argv else ""
                car.status = "stopped"
            if not car.argv:
                continue
            if car.proc is not None and car.proc.returncode is not None:
                code = car.proc.returncode
                await self._stop(car)  # its group may outlive it (mlflow's uvicorn child)
                self._failed(car, f"exited with code {code}")
            if car.proc is None:
                if self._now() >= car.next_start:
                    await self._start(car)
                continue
            await self._probe(car)

    async def _start(self, car: Sidecar) -> None:
        home = sidecar_dir(self.data_dir, car.name)
        logfile = home / "sidecar.log"
        try:
            home.mkdir(parents=True, exist_ok=True)
            tensorboard_logdir(self.data_dir).mkdir(parents=True, exist_ok=True)
            if logfile.exists() and logfile.stat().st_size > LOG_MAX_BYTES:
                logfile.replace(home / "sidecar.log.1")
            with open(logfile, "ab") as out:
                car.proc = await asyncio.create_subprocess_exec(
                    *car.argv,
                    stdin=asyncio.subprocess.DEVNULL,
                    stdout=out,
                    stderr=asyncio.subprocess.STDOUT,
                    cwd=home,
                    env=sidecar_env(),
                    start_new_session=True,
                )
        except OSError as exc:
            self._failed(car, f"could not start: {exc}")
            return
        car.started, car.failing_since, car.healthy_since = self._now(), None, None
        car.status = "starting"
        log.info("plugin %s: sidecar started (pid %d), log in %s", car.name, car.proc.pid, logfile)

    def _failed(self, car: Sidecar, why: str) -> None:
        delay = BACKOFF[min(car.failures, len(BACKOFF) - 1)]
        car.failures += 1
        car.next_start = self._now() + delay
        car.status, car.last_check = "unhealthy", self.clock.now()
        car.healthy_since = None
        log.warning("plugin %s: sidecar %s; restarting in %.0f s", car.name, why, delay)

    async def _probe(self, car: Sidecar) -> None:
        ok = await reachable(car.probe_url, success_only=True)
        now = self._now()
        car.last_check = self.clock.now()
        if ok:
            if car.status != "healthy":
                log.info("plugin %s: sidecar healthy at %s", car.name, redact_url(car.url or ""))
                car.healthy_since = now
            if car.healthy_since is not None and now - car.healthy_since > STABLE_AFTER:
                car.failures = 0
            car.status, car.failing_since = "healthy", None
            return
        if car.status == "starting" and now - car.started < STARTUP_GRACE:
            return
        car.status = "unhealthy"
        car.failing_since = car.failing_since or now
        if now - car.failing_since > HANG_LIMIT:
            await self._stop(car)
            self._failed(car, "stopped answering its health probe")

    async def _stop(self, car: Sidecar) -> None:
        proc, car.proc = car.proc, None
        if proc is None:
            return
        _signal_group(proc.pid, signal.SIGTERM)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(proc.wait(), STOP_GRACE)
        # Whatever of the group is left (children of a process that already exited, or one that
        # ignored SIGTERM) goes now: the next sidecar needs the port.
        _signal_group(proc.pid, signal.SIGKILL)
        if proc.returncode is None:
            await proc.wait()

    async def stop_all(self) -> None:
        for car in self._cars.values():
            if car.proc is not None:
                log.info("plugin %s: stopping its sidecar", car.name)
                await self._stop(car)
            car.status = "stopped"


def _signal_group(pgid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)
