"""Tracking plugins: configs (stored with their secrets, served redacted), health, and the check
of the plugins a task names at submission (docs/plugins.md).

Sidecars themselves are run by fetchml.services.sidecars; this service asks it for their status
and wakes it when a config changes.
"""

from __future__ import annotations

import importlib.util
from typing import TYPE_CHECKING, Any

import httpx
from sqlalchemy import select
from sqlalchemy.orm import Session

from fetchml.core.clock import Clock
from fetchml.core.enums import AuditEventType
from fetchml.core.errors import NotFoundError, ValidationError
from fetchml.core.models import HealthResponse, PluginConfig, PluginStatus
from fetchml.core.plugins import SPECS, Plugin, as_model, redact_url, redacted, tracker_url, validate
from fetchml.services.base import read
from fetchml.services.principal import Principal
from fetchml.services.write_queue import Tx, WriteQueue
from fetchml.store.db import Database
from fetchml.store.tables import PluginRow

if TYPE_CHECKING:
    from fetchml.services.sidecars import SidecarSupervisor

PROBE_TIMEOUT = 3.0  # seconds a remote's reachability probe may take
# What a sidecar's health probe asks for; a remote answers anything.
HEALTH_PATH = {"mlflow": "health", "tensorboard": "data/environment"}


def _spec_or_404(name: str) -> None:
    if name not in SPECS:
        raise NotFoundError(f"Unknown plugin {name!r}; plugins: {', '.join(SPECS)}")


def _url_of(name: str, cfg: PluginConfig) -> str | None:
    return tracker_url(name, cfg)


def configs(session: Session) -> dict[str, PluginConfig]:
    rows = {r.name: r for r in session.scalars(select(PluginRow)).all()}
    return {name: as_model(rows[name].config if name in rows else None) for name in SPECS}


def enabled_plugins(session: Session) -> dict[str, PluginConfig]:
    """The enabled plugins' configs, secrets included."""
    return {n: c for n, c in configs(session).items() if c.enabled}


def task_plugin_status(name: str, cfg: PluginConfig) -> dict[str, Any]:
    """A task's plugin_status entry: where its runs go (the URL redacted)."""
    url = _url_of(name, cfg)
    out: dict[str, Any] = {"name": name}
    if url:
        out["url"] = redact_url(url)
    return out


class PluginService:
    def __init__(
        self,
        db: Database,
        writer: WriteQueue,
        clock: Clock,
        version: str,
        supervisor: SidecarSupervisor | None = None,
    ) -> None:
        self.db = db
        self.supervisor = supervisor
        self.writer = writer
        self.clock = clock
        self.version = version
        # name -> the last health check's outcome (this process's; a fresh one checks again).
        self._status: dict[str, PluginStatus] = {}

    # -- reads --------------------------------------------------------------------------------

    def _supervised(self) -> bool:
        return self.supervisor is not None and self.supervisor.enabled

    def _wire(self, name: str, cfg: PluginConfig) -> Plugin:
        status = self._status.get(name)
        if cfg.mode == "sidecar" and self.supervisor is not None:
            status = self.supervisor.status(name, cfg) or status
        if cfg.mode == "disabled" or status is None:
            url = _url_of(name, cfg)
            status = PluginStatus(
                name=name,
                status="stopped" if cfg.mode == "disabled" else None,
                url=redact_url(url) if url else None,
            )
        return Plugin(
            name=name,
            enabled=bool(cfg.enabled),
            mode=cfg.mode or "disabled",
            status=status,
            config=redacted(name, cfg),
            # A sidecar this server does not supervise (started with sidecars off) runs only
            # once a server that does is (re)started.
            requires_restart=cfg.mode == "sidecar" and not self._supervised(),
            version=self.version,
        )

    async def list(self) -> list[Plugin]:
        found = await read(self.db, configs)
        return [self._wire(n, c) for n, c in found.items()]

    async def get(self, name: str) -> Plugin:
        _spec_or_404(name)
        found = await read(self.db, configs)
        return self._wire(name, found[name])

    async def get_config(self, name: str) -> PluginConfig:
        return (await self.get(name)).config

    # -- writes -------------------------------------------------------------------------------

    async def put_config(
        self, principal: Principal, name: str, cfg: PluginConfig, ip_address: str | None = None
    ) -> Plugin:
        _spec_or_404(name)
        stored = validate(name, cfg)
        if stored.mode == "sidecar":
            extra = SPECS[name].extra
            if extra and not installed(extra):
                raise ValidationError(
                    f"mode: sidecar needs the {extra} package on the server: pip install 'fetchml[{extra}]'"
                )
        await self.writer.run(lambda tx: self._store(tx, principal, name, stored, ip_address, "configure"))
        self._status.pop(name, None)  # the old health says nothing about the new config
        if self.supervisor is not None:
            self.supervisor.kick()  # hot reload: the sidecar restarts with the new settings
        return self._wire(name, stored)

    async def disable(self, principal: Principal, name: str, ip_address: str | None = None) -> None:
        """DELETE: the plugin is disabled; its settings are kept for when it is enabled again."""
        _spec_or_404(name)

        def op(tx: Tx) -> None:
            row = tx.session.get(PluginRow, name)
            old = as_model(row.config if row else None)
            self._store(
                tx,
                principal,
                name,
                old.model_copy(update={"enabled": False, "mode": "disabled"}),
                ip_address,
                "disable",
            )

        await self.writer.run(op)
        self._status.pop(name, None)
        if self.supervisor is not None:
            self.supervisor.kick()

    def _store(
        self, tx: Tx, principal: Principal, name: str, cfg: PluginConfig, ip: str | None, action: str
    ) -> None:
        now = tx.clock.now()
        row = tx.session.get(PluginRow, name)
        data = cfg.model_dump(mode="json", exclude_none=True)
        if row is None:
            tx.session.add(PluginRow(name=name, config=data, updated_at=now, updated_by=principal.user_id))
        else:
            row.config, row.updated_at, row.updated_by = data, now, principal.user_id
        tx.audit(
            AuditEventType.PLUGIN_CONFIGURED,
            user_id=principal.user_id,
            resource=f"plugin:{name}",
            action=action,
            ip_address=ip,
            metadata={"config": redacted(name, cfg).model_dump(mode="json", exclude_none=True)},
        )

    # -- health -------------------------------------------------------------------------------

    async def health(self, name: str) -> HealthResponse:
        """A remote is probed for reachability (any HTTP answer within PROBE_TIMEOUT), a sidecar
        on its health route (a 2xx); a disabled plugin is unhealthy (it serves nothing)."""
        _spec_or_404(name)
        cfg = (await read(self.db, configs))[name]
        now = self.clock.now()
        url = _url_of(name, cfg)
        ok = False
        if cfg.mode == "remote" and url:
            ok = await reachable(url)
        elif cfg.mode == "sidecar" and url:
            ok = await reachable(url.rstrip("/") + "/" + HEALTH_PATH[name], success_only=True)
        status = "stopped" if cfg.mode == "disabled" else ("healthy" if ok else "unhealthy")
        if not ok and cfg.mode == "sidecar" and self.supervisor is not None:
            # Still starting is not a failure: the supervisor knows which it is.
            supervised = self.supervisor.status(name, cfg)
            if supervised is not None and supervised.status == "starting":
                status = "starting"
        self._status[name] = PluginStatus(
            name=name, status=status, url=redact_url(url) if url else None, last_check=now
        )
        return HealthResponse(status="healthy" if ok else "unhealthy", version=self.version, timestamp=now)


async def reachable(url: str, *, success_only: bool = False) -> bool:
    """Any HTTP answer (or, with success_only, a 2xx) within PROBE_TIMEOUT. No redirect is
    followed and no proxy is taken from the environment: only the configured address is asked."""
    try:
        async with httpx.AsyncClient(timeout=PROBE_TIMEOUT, follow_redirects=False, trust_env=False) as http:
            resp = await http.get(url)
        return resp.is_success or not success_only
    except httpx.HTTPError:
        return False


def installed(module: str) -> bool:
    """Whether the package a sidecar runs can be imported here."""
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False
