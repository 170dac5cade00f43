"""bench/simulate: a tiny run is deterministic and sane (every task runs, nothing oversubscribed)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

from bench.simulate import POLICIES, simulate

ROOT = Path(__file__).resolve().parents[1]


def figures(res: dict[str, Any]) -> dict[str, Any]:
    """The result without wall-clock timings (the only part that may differ between runs)."""
    out = json.loads(json.dumps(res))
    for r in out["policies"].values():
        for k in ("decide_ms_mean", "decide_ms_p99", "wall_s"):
            del r[k]
    return out


def test_same_seed_same_figures_and_sane() -> None:
    a = simulate(3, 150, 6, 0.95)
    b = simulate(3, 150, 6, 0.95)
    assert figures(a) == figures(b)
    assert figures(simulate(4, 150, 6, 0.95)) != figures(a)
    assert set(a["policies"]) == set(POLICIES)
    for name, r in a["policies"].items():
        assert r["oversubscribed"] == 0, name
        assert sum(c["tasks"] for c in r["classes"].values()) == 150, name  # every task ran
        assert 0.0 < r["utilisation"] <= 1.0, name
        assert 0.0 < r["util_vs_ideal"] <= 1.0, name  # no schedule beats the lower bound
        assert r["decisions"] > 0
    assert a["policies"]["fifo"]["backfilled"] == a["policies"]["today"]["backfilled"] == 0
    assert a["policies"]["today"]["gangs_starved"] is not None


def test_the_command_prints_json() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "bench.simulate", "--tasks", "60", "--workers", "4", "--seed", "2", "--json"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    res = json.loads(out.stdout)
    assert res["config"] == {"seed": 2, "tasks": 60, "workers": 4, "gpus_per_worker": 8, "load": 0.95}
    assert set(res["policies"]) == set(POLICIES)
    table = subprocess.run(
        [sys.executable, "-m", "bench.simulate", "--tasks", "60", "--workers", "4", "--policies", "backfill"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    ).stdout
    assert "utilisation / ideal" in table and "backfill" in table
