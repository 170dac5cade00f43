"""API4 Unrestricted resource consumption, on the server itself: a task's variable-size fields are
bounded at submission, and a list answer is bounded in bytes, so a few `GET /v1/tasks?limit=1000`
over a database full of maximal tasks neither balloon the server's memory nor stall /health."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import psutil
import pytest

from fetchml.core.models import MAX_METADATA_BYTES, MAX_PLUGIN_CONFIGS_BYTES, MAX_PLUGINS
from fetchml.store.tables import TaskRow
from tests.backends import SQLITE
from tests.harness import Keys, ServerHandle, expect_error, make_keys
from tests.protocol_kit import enable_plugins

pytestmark = pytest.mark.slow

MAX_DATASETS = 64  # the default of FETCHML_MAX_DATASETS_PER_TASK
TASKS = 300
SUBMITTED = 30
CONCURRENT_LISTS = 4
ROUNDS = 2
LIST_BUDGET = 4 * 1024 * 1024  # the default of FETCHML_MAX_LIST_BYTES
# The bounds this test holds the server to.
RSS_GROWTH_LIMIT = 150 * 1024 * 1024
HEALTH_LIMIT_S = 1.0


def maximal_task(n: int, datasets: int = MAX_DATASETS) -> dict[str, Any]:
    """A task with every variable-size field at (or next to) its cap."""
    key_len = MAX_METADATA_BYTES // 64 // 2
    return {
        "job_name": f"big-{n}",
        "args": "a" * 16384,
        "entrypoint": "e" * 4096,
        "datasets": [f"{i:03d}".ljust(256, "d") for i in range(datasets)],
        "dataset_specs": [
            {
                "name": f"ds{i:03d}".ljust(128, "n"),
                "source": f"/datasets/{i:03d}/".ljust(4096, "s"),
                "sha256": "0" * 64,
                "mount_path": f"m{i:03d}/".ljust(1024, "p"),
            }
            for i in range(datasets)
        ],
        "metadata": {f"k{i:03d}".ljust(key_len, "k"): "v" * key_len for i in range(64)},
        # Tasks may name only the (enabled) plugins there are, with their own few settings.
        "plugin_configs": {
            "mlflow": {"enabled": True, "settings": {"experiment": "x" * 256}},
            "wandb": {"enabled": True, "settings": {"project": "x" * 256, "entity": "x" * 256}},
            "tensorboard": {"enabled": True},
        },
    }


@pytest.fixture(scope="module")
def full_server(module_server_factory: Callable[..., ServerHandle]) -> tuple[ServerHandle, Keys]:
    srv = module_server_factory(FETCHML_RATE_LIMIT_PER_MINUTE="100000")
    keys = make_keys(srv)
    enable_plugins(srv, "mlflow", "wandb", "tensorboard")

    def submit(n: int) -> None:
        with srv.http(keys.user) as http:
            r = http.post("/v1/tasks", json=maximal_task(n))
            assert r.status_code == 201, r.text[:500]

    # Some through the API (which takes them at the caps), the rest copies of those rows made
    # straight in the database: posting 120 MB of tasks would take most of a minute.
    with ThreadPoolExecutor(4) as pool:
        list(pool.map(submit, range(SUBMITTED)))
    names = ", ".join(f'"{c.name}"' for c in TaskRow.__table__.columns if c.name not in ("seq", "id"))
    new_id = "lower(hex(randomblob(16)))" if srv.backend == SQLITE else "md5(random()::text)"
    while (count := srv.db_exec("SELECT count(*) FROM tasks")[0][0]) < TASKS:
        srv.db_exec(
            f"INSERT INTO tasks (id, {names}) SELECT {new_id}, {names} FROM tasks ORDER BY seq LIMIT ?",
            (TASKS - count,),
        )
    return srv, keys


def test_caps_name_the_field(full_server: tuple[ServerHandle, Keys]) -> None:
    srv, keys = full_server
    with srv.http(keys.user) as http:
        too_many = maximal_task(0, datasets=MAX_DATASETS + 1)
        body = expect_error(http.post("/v1/tasks", json=too_many), 422, "VALIDATION_ERROR")
        assert "dataset_specs" in body["error"], body
        for field, value in (
            ("metadata", {f"k{i}": "v" for i in range(65)}),
            ("metadata", {f"k{i}": "v" * 4000 for i in range(5)}),
            ("plugin_configs", {f"p{i}": {} for i in range(MAX_PLUGINS + 1)}),
            ("plugin_configs", {"p": {"settings": {"x": "y" * MAX_PLUGIN_CONFIGS_BYTES}}}),
            ("args", "a" * 16385),
        ):
            body = expect_error(
                http.post("/v1/tasks", json={"job_name": "cap", field: value}), 422, "VALIDATION_ERROR"
            )
            assert field in body["error"], body
        spec = maximal_task(0, datasets=1)["dataset_specs"][0]
        spec["mount_path"] = "m/" + "p" * 1024
        body = expect_error(
            http.post("/v1/tasks", json={"job_name": "cap", "dataset_specs": [spec]}), 422, "VALIDATION_ERROR"
        )
        assert "dataset_specs" in body["error"], body


def test_concurrent_big_lists_stay_within_memory_and_health_stays_fast(
    full_server: tuple[ServerHandle, Keys],
) -> None:
    srv, keys = full_server
    assert srv.proc is not None
    proc = psutil.Process(srv.proc.pid)
    with srv.http(keys.user) as http:
        assert http.get("/v1/tasks", params={"limit": 5}).status_code == 200
    baseline = proc.memory_info().rss
    peak = baseline
    health: list[float] = []
    stop = threading.Event()

    def sample_rss() -> None:
        nonlocal peak
        while not stop.is_set():
            peak = max(peak, proc.memory_info().rss)
            time.sleep(0.02)

    def ping_health() -> None:
        with httpx.Client(base_url=srv.url, timeout=30) as http:
            while not stop.is_set():
                started = time.perf_counter()
                assert http.get("/health").status_code == 200
                health.append(time.perf_counter() - started)
                time.sleep(0.05)

    def big_lists(_: int) -> list[tuple[int, int, int]]:
        out = []
        with srv.http(keys.user) as http:
            for _ in range(ROUNDS):
                r = http.get("/v1/tasks", params={"limit": 1000})
                assert r.status_code == 200, r.text[:300]
                page = r.json()
                out.append((len(r.content), len(page["tasks"]), page["total"]))
        return out

    watchers = [threading.Thread(target=sample_rss), threading.Thread(target=ping_health)]
    for t in watchers:
        t.start()
    started = time.monotonic()
    try:
        with ThreadPoolExecutor(CONCURRENT_LISTS) as pool:
            answers = [a for batch in pool.map(big_lists, range(CONCURRENT_LISTS)) for a in batch]
    finally:
        time.sleep(0.3)
        stop.set()
        for t in watchers:
            t.join(30)
    elapsed = time.monotonic() - started
    growth = peak - baseline
    print(
        f"\n{len(answers)} lists in {elapsed:.1f}s; response {max(a[0] for a in answers) / 2**20:.1f} MiB "
        f"with {answers[0][1]} of {answers[0][2]} tasks; RSS {baseline / 2**20:.0f} MiB -> peak "
        f"{peak / 2**20:.0f} MiB (+{growth / 2**20:.0f}); /health max {max(health):.3f}s over {len(health)}"
    )
    for size, count, total in answers:
        assert total == TASKS
        assert 0 < count < TASKS  # the budget cut the page short; `total` still counts every task
        assert size <= LIST_BUDGET * 1.25, size
    assert growth < RSS_GROWTH_LIMIT, f"RSS grew by {growth / 2**20:.0f} MiB"
    assert health and max(health) < HEALTH_LIMIT_S, max(health)


def test_a_client_pages_through_everything_with_offset(full_server: tuple[ServerHandle, Keys]) -> None:
    srv, keys = full_server
    seen: list[str] = []
    with srv.http(keys.user) as http:
        for _ in range(TASKS):  # bounded: every page holds at least one task
            page = http.get("/v1/tasks", params={"limit": 1000, "offset": len(seen)}).json()
            assert page["total"] == TASKS and page["offset"] == len(seen)
            seen += [t["id"] for t in page["tasks"]]
            if len(seen) >= page["total"]:
                break
    assert len(seen) == len(set(seen)) == TASKS
