"""Prometheus metrics of one server process: its registry, the HTTP middleware that counts
requests by route template, the stream-connection gauges, and the rendering of GET /metrics.

Two kinds of series (docs/metrics.md):
- per-process: requests, request latency, submit -> running latency, open streams. Each server
  counts what it served; add them up across servers (`sum`).
- database-wide: tasks, queue, workers, GPUs, audit chain. Read from the database at scrape time
  (MetricsService), so every server on one database reports the same values; take `max` across
  servers, never `sum`.

Each app owns its CollectorRegistry (never prometheus_client's global one), so several apps in
one process (tests) keep separate counts.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from typing import Any, Literal

from litestar.connection import ASGIConnection
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from fetchml.services.metrics import ClusterMetrics

# What Prometheus's text format 0.0.4 is served as.
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
# The label of every request no route matched (404s, 405s): one series, whatever the path.
UNMATCHED = "unmatched"

_HTTP_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
# From a task that starts at once to one that waited a day for GPUs.
_START_BUCKETS = (0.1, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0, 3600.0, 14400.0, 43200.0, 86400.0)

StreamKind = Literal["sse", "websocket"]


class ServerMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.http_requests = Counter(
            "fetchml_http_requests",
            "HTTP requests served by this process, by route template, method and status.",
            ["route", "method", "status"],
            registry=self.registry,
        )
        self.http_duration = Histogram(
            "fetchml_http_request_duration_seconds",
            "Time from a request's arrival to the end of its response, by route template and method.",
            ["route", "method"],
            buckets=_HTTP_BUCKETS,
            registry=self.registry,
        )
        self.start_latency = Histogram(
            "fetchml_task_start_latency_seconds",
            "Seconds from a task's submission to its first attempt running, for starts this process recorded.",
            buckets=_START_BUCKETS,
            registry=self.registry,
        )
        self.sse_connections = Gauge(
            "fetchml_sse_connections",
            "Server-sent event streams open on this process.",
            registry=self.registry,
        )
        self.websocket_connections = Gauge(
            "fetchml_websocket_connections",
            "WebSocket connections open on this process.",
            registry=self.registry,
        )

    def observe_start_latency(self, seconds: float) -> None:
        self.start_latency.observe(seconds)

    @contextmanager
    def open_stream(self, kind: StreamKind) -> Iterator[None]:
        """Wrap the life of one SSE stream or WebSocket connection: the gauge goes up on entry and
        down on exit, however the stream ends."""
        gauge = self.sse_connections if kind == "sse" else self.websocket_connections
        gauge.inc()
        try:
            yield
        finally:
            gauge.dec()

    def render(self, cluster: ClusterMetrics) -> bytes:
        # A registry per scrape for the database-wide families: the collector holds this scrape's
        # snapshot only, so two concurrent scrapes cannot see each other's numbers.
        db = CollectorRegistry(auto_describe=False)
        db.register(ClusterCollector(cluster))
        return generate_latest(db) + generate_latest(self.registry)


class ClusterCollector(Collector):
    """The database-wide gauges of one snapshot."""

    def __init__(self, cluster: ClusterMetrics) -> None:
        self.cluster = cluster

    def collect(self) -> Iterable[Metric]:
        c = self.cluster
        tasks = GaugeMetricFamily(
            "fetchml_tasks", "Tasks in the database by status (database-wide).", labels=["status"]
        )
        for status, n in c.tasks_by_status.items():
            tasks.add_metric([status], n)
        queue = GaugeMetricFamily(
            "fetchml_queue_depth",
            "Queued tasks by submitted priority (database-wide).",
            labels=["priority"],
        )
        for priority, n in c.queued_by_priority.items():
            queue.add_metric([str(priority)], n)
        workers = GaugeMetricFamily(
            "fetchml_workers", "Workers by status (database-wide).", labels=["status"]
        )
        for status, n in c.workers_by_status.items():
            workers.add_metric([status], n)
        yield tasks
        yield queue
        yield workers
        yield GaugeMetricFamily(
            "fetchml_gpus", "GPUs on workers that are not offline (database-wide).", value=c.gpus_total
        )
        yield GaugeMetricFamily(
            "fetchml_gpus_allocated",
            "GPUs held by running or placed tasks on workers that are not offline (database-wide).",
            value=c.gpus_allocated,
        )
        yield GaugeMetricFamily(
            "fetchml_audit_chain_length",
            "Events in the audit chain (its last sequence number; database-wide).",
            value=c.audit_chain_length,
        )


ASGIApp = Any


class MetricsMiddleware:
    """Counts and times every HTTP request under its route's template (`/v1/tasks/{task_id}`),
    which Litestar writes into the scope once it has routed the request. Raw paths never become
    labels: the series stay as few as the routes, whatever clients send."""

    def __init__(self, app: ASGIApp, metrics: ServerMetrics) -> None:
        self.app = app
        self.metrics = metrics
        # labels() checks and looks up its arguments under a lock on every call: keep the
        # children, which are as few as the routes times their statuses.
        self._series: dict[tuple[str, str, str], tuple[Any, Any]] = {}

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 0

        async def send_status(message: dict[str, Any]) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_status)
        finally:
            route = scope.get("path_template") or UNMATCHED
            method = scope["method"] if scope.get("path_template") else UNMATCHED
            # Nothing sent: the app raised past its own handlers (the server answers 500).
            code = str(status or 500)
            series = self._series.get((route, method, code))
            if series is None:
                series = self._series[(route, method, code)] = (
                    self.metrics.http_requests.labels(route, method, code),
                    self.metrics.http_duration.labels(route, method),
                )
            series[0].inc()
            series[1].observe(time.perf_counter() - started)


def metrics_of(connection: ASGIConnection[Any, Any, Any, Any]) -> ServerMetrics:
    """The app's ServerMetrics (create_app keeps it in the app's state)."""
    metrics: ServerMetrics = connection.app.state["metrics"]
    return metrics
