"""bench/schedule: the cost of one scheduling decision (fetchml.core.scheduling.decide).

A cluster of 100 workers with 8 GPUs each (60 A100, 40 H100; 64 CPUs, 512 GB, 8 batch slots),
partly busy, one reservation; queues of 1k, 10k and 100k tasks with a realistic mix (most tasks
0-1 GPU, some 2-8, ~1% gangs of 2-4 nodes, a few typed or carrying the reservation), submitted
over the last two days. Times decide() alone (building the TaskReq objects is the caller's, and
is reported separately), best and median of several runs, and the growth per 10x.

    python -m bench.schedule [--runs 7] [--sizes 1000,10000,100000] [--seed 1]

Scenarios:
- mixed:      queue in submission (seq) order, as fetched by `ORDER BY seq`;
- presorted:  the same queue ordered (priority desc, seq), as the claim query already sorts;
- gpu-starved: every GPU busy but batch slots free, a queue of GPU tasks with CPU-only tasks
  scattered deep in it (the walk cannot stop at "cluster full" and must settle shapes instead).
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import time
from dataclasses import replace

from fetchml.core.scheduling import Decision, ReservationHold, TaskReq, WorkerFree, decide

NOW = 1_750_000_000.0
WORKERS = 100
GPUS_PER_WORKER = 8


def make_cluster(rng: random.Random, *, all_gpus_busy: bool = False) -> list[WorkerFree]:
    workers = []
    for i in range(WORKERS):
        busy = GPUS_PER_WORKER if all_gpus_busy else rng.choice([0, 2, 4, 5, 6, 7, 8, 8])
        busy_tasks = min(busy, 7) if all_gpus_busy else min(busy, rng.randint(0, 6))
        free = tuple(sorted(rng.sample(range(GPUS_PER_WORKER), GPUS_PER_WORKER - busy)))
        workers.append(
            WorkerFree(
                id=f"w-{i:03d}",
                free_cpu=64 - (4 if all_gpus_busy else 8) * busy,
                free_memory_gb=512 - 32 * busy,
                free_gpus=free,
                gpu_type="A100" if i < 60 else "H100",
                batch_available=8 - busy_tasks,
                active=i % 50 != 49,  # two draining
                total_cpu=64,
                total_memory_gb=512,
                total_gpus=GPUS_PER_WORKER,
                batch_total=8,
            )
        )
    return workers


def reservation_for(workers: list[WorkerFree]) -> list[ReservationHold]:
    held = {w.id: w.free_gpus[:2] for w in workers if w.active and len(w.free_gpus) >= 2}
    first_two = dict(list(held.items())[:2])
    return [ReservationHold(id="r-1", user_id="alice", gpus=first_two, gpu_type=None)]


def make_queue(rng: random.Random, n: int, *, gpu_heavy: bool = False) -> list[TaskReq]:
    tasks = []
    start = NOW - 48 * 3600
    step = 48 * 3600 / max(n, 1)
    prios = [1, 2, 3, 4, 5, 5, 5, 5, 6, 7, 8, 9, 10]
    for seq in range(n):
        r = rng.random()
        gpu_type = None
        node_count = 1
        reservation = None
        user = rng.choice(["alice", "bob", "carol", "dave"])
        if gpu_heavy:
            r = 0.36 + r * 0.64 if rng.random() > 0.01 else 0.0
        if r < 0.35:
            gpu, cpu, mem = 0, rng.choice([1, 2, 4]), rng.choice([4, 8, 16])
        elif r < 0.80:
            gpu, cpu, mem = 1, 8, 32
            gpu_type = rng.choice([None, None, None, None, "A100", "H100"])
        elif r < 0.95:
            gpu = rng.choice([2, 4])
            cpu, mem = 8 * gpu, 32 * gpu
            gpu_type = rng.choice([None, "A100", "H100"])
        elif r < 0.99:
            gpu, cpu, mem = 8, 64, 256
        else:
            gpu, cpu, mem = rng.choice([4, 8]), 32, 128
            node_count = rng.choice([2, 4])
        if rng.random() < 0.005:
            reservation, user, gpu = "r-1", "alice", max(gpu, 1)
        tasks.append(
            TaskReq(
                id=f"t-{seq}",
                seq=seq,
                priority=rng.choice(prios),
                created_at=start + seq * step,
                cpu=cpu,
                memory_gb=mem,
                gpu=gpu,
                gpu_type=gpu_type,
                node_count=node_count,
                reservation_id=reservation,
                user_id=user,
            )
        )
    return tasks


def fresh(t: TaskReq) -> TaskReq:
    """A copy with its own objects, laid out in the order it is made, like rows fetched in it."""
    return replace(t, id=t.id.encode().decode(), seq=t.seq + 0, created_at=t.created_at + 0.0)


def time_decide(
    queue: list[TaskReq], workers: list[WorkerFree], reservations: list[ReservationHold], runs: int
) -> tuple[list[float], list[float], Decision]:
    """ms of decide() alone, and of decide() plus building the whole pending dict."""
    times, with_pending = [], []
    decision = decide(queue, workers, reservations, now=NOW)  # warm-up
    for _ in range(runs):
        t0 = time.perf_counter()
        decision = decide(queue, workers, reservations, now=NOW)
        t1 = time.perf_counter()
        _ = decision.pending
        t2 = time.perf_counter()
        times.append((t1 - t0) * 1000)
        with_pending.append((t2 - t0) * 1000)
    return times, with_pending, decision


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=int, default=7)
    ap.add_argument("--sizes", default="1000,10000,100000")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--json", action="store_true", help="print one JSON object instead of a table")
    args = ap.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    rng = random.Random(args.seed)
    workers = make_cluster(rng)
    reservations = reservation_for(workers)
    starved = make_cluster(random.Random(args.seed + 1), all_gpus_busy=True)
    rows: list[dict[str, object]] = []
    for n in sizes:
        t0 = time.perf_counter()
        queue = make_queue(random.Random(args.seed * 1000 + n), n)
        build_ms = (time.perf_counter() - t0) * 1000
        presorted = [fresh(t) for t in sorted(queue, key=lambda t: (-t.priority, t.seq))]
        heavy = make_queue(random.Random(args.seed * 7 + n), n, gpu_heavy=True)
        for scenario, q, ws in (
            ("mixed", queue, workers),
            ("presorted", presorted, workers),
            ("gpu-starved", heavy, starved),
        ):
            times, with_pending, d = time_decide(q, ws, reservations, args.runs)
            rows.append(
                {
                    "scenario": scenario,
                    "tasks": n,
                    "best_ms": round(min(times), 2),
                    "median_ms": round(statistics.median(times), 2),
                    "with_pending_median_ms": round(statistics.median(with_pending), 2),
                    "placed": len(d.assignments),
                    "pending": len(d.pending),
                    "walked": d.scanned,
                    "shapes": len({t.shape for t in q}),
                    "shadow": d.shadow.task_id if d.shadow else None,
                    "build_taskreqs_ms": round(build_ms, 1) if scenario == "mixed" else None,
                }
            )
    if args.json:
        print(json.dumps(rows, indent=2))
        return
    print(f"decide(): {WORKERS} workers x {GPUS_PER_WORKER} GPUs, {args.runs} runs each (ms per decision)")
    print(
        f"{'scenario':<12} {'tasks':>7} {'best':>8} {'median':>8} {'x per 10x':>9} "
        f"{'+pending':>9} {'placed':>6} {'walked':>7} {'shapes':>6}"
    )
    prev: dict[str, float] = {}
    for row in rows:
        scen, med = str(row["scenario"]), float(row["median_ms"])  # type: ignore[arg-type]
        growth = f"{med / prev[scen]:.1f}" if scen in prev else "-"
        prev[scen] = med
        print(
            f"{scen:<12} {row['tasks']:>7} {row['best_ms']:>8} {row['median_ms']:>8} {growth:>9} "
            f"{row['with_pending_median_ms']:>9} {row['placed']:>6} {row['walked']:>7} {row['shapes']:>6}"
        )
    print("+pending: median ms of decide() plus materialising Decision.pending (one entry per queued task)")
    builds = [r for r in rows if r["build_taskreqs_ms"] is not None]
    for r in builds:
        print(
            f"(caller side) generating and building {r['tasks']} TaskReq objects: {r['build_taskreqs_ms']} ms"
        )


if __name__ == "__main__":
    main()
