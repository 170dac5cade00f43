"""Server-side settings: one object, env prefix FETCHML_, CLI flags layered on top."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


def default_data_dir() -> Path:
    import platformdirs

    return Path(platformdirs.user_data_dir("fetchml", appauthor=False))


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="FETCHML_", extra="ignore")

    data_dir: Path = Field(default_factory=default_data_dir)
    database_url: str | None = None
    host: str = "127.0.0.1"
    port: int = 9101
    rate_limit_per_minute: int = Field(default=600, ge=1)
    auth_cache_seconds: float = Field(default=2.0, ge=0)
    max_body_bytes: int = Field(default=1_048_576, ge=1024)
    max_snapshot_bytes: int = Field(default=256 * 1024 * 1024, ge=1024)
    timezone: str = "UTC"
    default_max_retries: int = Field(default=3, ge=0)
    # Time limits (docs/scheduling.md#time-limits): the limit of a task submitted without one
    # (None: no limit), and the largest a task or Jupyter service may ask for (None: one year).
    default_time_limit_minutes: int | None = Field(default=None, ge=1, le=525_600)
    max_time_limit_minutes: int | None = Field(default=None, ge=1, le=525_600)
    sqlite_synchronous: Literal["FULL", "NORMAL"] = "FULL"
    # How long a statement waits for another process's SQLite lock before answering 503 busy.
    sqlite_busy_timeout: float = Field(default=30.0, gt=0, le=600)
    # Idempotency-Key rows of POST /v1/tasks are kept this long, then swept.
    idempotency_retention_hours: float = Field(default=24.0, gt=0)
    heartbeat_interval: float = Field(default=2.0, gt=0)
    heartbeat_timeout: float = Field(default=30.0, gt=0)
    claim_wait: float = Field(default=20.0, gt=0, le=120)
    sweep_interval: float = Field(default=1.0, gt=0)
    max_artifact_bytes: int = Field(default=1 << 30, ge=1024)
    # Per task, all attempts together: lines past either bound are dropped, with one notice line.
    max_log_lines_per_task: int = Field(default=1_000_000, ge=1)
    max_log_bytes_per_task: int = Field(default=256 * 1024 * 1024, ge=1024)
    # priority_aged = priority + rate * hours queued, at most the cap (see docs/configuration.md).
    # The cap is at least the top priority, 10: a lower one would flatten the priorities above it.
    priority_aging_per_hour: float = Field(default=1.0, ge=0, allow_inf_nan=False)
    priority_aging_cap: float = Field(default=15.0, ge=10, allow_inf_nan=False)
    # Bounds that keep one request from taking unbounded server memory (docs/configuration.md).
    max_datasets_per_task: int = Field(default=64, ge=1, le=1024)
    max_list_bytes: int = Field(default=4 * 1024 * 1024, ge=65536)
    # Comma-separated IPs/CIDRs of reverse proxies whose X-Forwarded-For is believed; empty:
    # the peer address is the client, whatever headers say.
    trusted_proxies: str = ""
    access_log: bool = True
    # True: every user sees every task's contents (args, logs, artifacts, ...), not only their own.
    shared_task_contents: bool = False
    # True: GET /metrics answers requests without a key (a scraper on a trusted network);
    # false: an admin key only (docs/metrics.md).
    metrics_public: bool = False
    # Live streams (docs/events.md): open SSE + WebSocket streams one key may hold; the events
    # kept for resuming a dropped stream; the keep-alive period; WebSocket ping and idle limit.
    max_streams_per_key: int = Field(default=20, ge=1)
    event_replay_window: int = Field(default=10_000, ge=100)
    stream_keepalive_seconds: float = Field(default=15.0, gt=0)
    ws_ping_seconds: float = Field(default=20.0, gt=0)
    ws_idle_seconds: float = Field(default=60.0, gt=0)
    # Jupyter services (docs/jupyter.md): minutes without activity before one is stopped (0:
    # never; a request may set its own), and how many unfinished ones a user may hold.
    jupyter_idle_timeout_minutes: int = Field(default=120, ge=0, le=525_600)
    jupyter_max_services_per_user: int = Field(default=10, ge=1)
    # Request bodies through the Jupyter proxy (notebook and file uploads) are streamed, not
    # held, up to this size; max_body_bytes does not apply to them.
    jupyter_proxy_max_body_bytes: int = Field(default=256 * 1024 * 1024, ge=1024)
    # Tracking plugins in mode sidecar (docs/plugins.md): whether this server process runs them
    # (with several servers on one database, let one do it), and how often it probes them.
    sidecars: bool = True
    sidecar_probe_interval: float = Field(default=2.0, gt=0, le=60)
    log_level: str = "info"
    # `fetchml serve` on a loopback host, with no API key in its database, makes an admin key for
    # the local user and writes it to the client config file (docs/configuration.md#first-run).
    local_admin_key: bool = True
    # Signed audit checkpoints: one every N events or T seconds, whichever comes first, by the
    # Ed25519 key at audit_signing_key (default <data_dir>/audit-signing-key.pem, made on first start).
    audit_checkpoint_events: int = Field(default=1000, ge=1)
    audit_checkpoint_seconds: float = Field(default=60.0, gt=0)
    audit_signing_key: Path | None = None
    # Chains at least this long are verified by one child process per CPU.
    audit_verify_parallel_min_events: int = Field(default=200_000, ge=1)
    # Testing aid: the server's clock adds the seconds written in this file (fetchml/host/clock.py),
    # so tests of aging, leases, reservations and rate limits move a real server's time forward.
    clock_offset_file: Path | None = None
    # Testing aid: the seconds one minute of a time limit lasts (60). Tests set 1, so a task
    # with a one-minute limit is stopped after one second, by the real worker and sweep.
    time_limit_unit_seconds: float = Field(default=60.0, gt=0, le=60, allow_inf_nan=False)

    @field_validator("trusted_proxies")
    @classmethod
    def _proxies(cls, v: str) -> str:
        import ipaddress

        for part in filter(None, (p.strip() for p in v.split(","))):
            try:
                ipaddress.ip_network(part, strict=False)
            except ValueError:
                raise ValueError(f"{part!r} is not an IP address or CIDR network") from None
        return v

    @model_validator(mode="after")
    def _default_within_max(self) -> Settings:
        d, m = self.default_time_limit_minutes, self.max_time_limit_minutes
        if d is not None and m is not None and d > m:
            raise ValueError(f"default_time_limit_minutes ({d}) is above max_time_limit_minutes ({m})")
        return self

    @property
    def resolved_database_url(self) -> str:
        if self.database_url:
            return self.database_url
        return f"sqlite:///{(self.data_dir / 'fetchml.db').as_posix()}"

    def ensure_data_dir(self) -> None:
        """Create the data dir readable by the server's user only (0700), tightening an existing
        one: it holds the database, snapshots and artifacts, none of them for other local users."""
        import os

        self.data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        os.chmod(self.data_dir, 0o700)
