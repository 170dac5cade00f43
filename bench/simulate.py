"""bench/simulate: a trace-driven simulation, in virtual time, of the real scheduling decision.

A seeded trace (Poisson arrivals at a load near saturation; 1, 2, 4 and 8-GPU tasks with
lognormal durations; 5% gangs of 2-4 whole nodes; three priority classes; time limits of 1-3x
the real duration on 85% of the tasks; a few reservations of whole workers for a 2 h window)
is played against a cluster of 8-GPU workers (CPU and memory never bind). After every event
(arrival, completion, reservation start or end) `fetchml.core.scheduling.decide` runs on the
whole queue and every placement it makes starts at once; a task runs its real duration (or
until its time limit, whichever is shorter). The same trace is run under three policies:

- fifo:     strict priority FIFO: nothing starts after the first task (in the decision order)
            that does not fit (head-of-line blocking);
- today:    decide() as before time limits: backfill of free capacity, a shadow hold for the
            first blocked gang, no task ever uses held capacity (the tasks are passed without
            their limits; the workers' releases are passed, so the shadow's start is known);
- backfill: today's policy plus backfill (a task whose time limit ends by the shadow's start
            may use the held capacity) and a kept promise: the shadow's owner keeps it, and
            its start, until it starts (`Decision.promise` is passed into the next decision,
            as the server does; fetchml.core.scheduling.shadow).

    python -m bench.simulate [--seed 1] [--tasks 5000] [--workers 100] [--load 0.95] [--json]

Figures: GPU utilisation over the makespan against the trace's ideal (work / (capacity x a
lower bound on the makespan)), waits per priority class, the longest wait against the aging
bound, gangs starved (still queued after the start time their shadow promised), backfilled
placements, and the wall time of decide() per event. Everything but the wall times is
deterministic for a seed. See docs/scheduling.md, "Simulation".
"""

from __future__ import annotations

import argparse
import heapq
import json
import math
import random
import statistics
import time
from bisect import bisect_left, insort
from dataclasses import dataclass

from fetchml.core.aging import DEFAULT_AGING_CAP, DEFAULT_AGING_RATE, aged_priority, hours_waited
from fetchml.core.scheduling import (
    Placement,
    Promise,
    Release,
    ReservationHold,
    Shadow,
    TaskReq,
    WorkerFree,
    decide,
)

T0 = 1_750_000_000.0  # virtual time 0, as POSIX seconds
GPUS, CPUS, MEM, SLOTS = 8, 128, 1024, 16  # per worker; CPU, memory and slots never bind
CLASSES = {2: "low", 5: "normal", 8: "high"}  # priority -> class
CLASS_WEIGHTS = (0.3, 0.5, 0.2)
POLICIES = ("fifo", "today", "backfill")
# simultaneous events: capacity comes back before anything starts
COMPLETION, RES_END, RES_START, ARRIVAL = range(4)


@dataclass(slots=True)
class Job:
    seq: int
    prio: int
    arrival: float  # virtual seconds
    gpu: int  # per node
    nodes: int
    duration: float  # what it really runs
    limit: float | None  # its time limit (seconds), None = none
    reservation: str | None = None
    user: str = "user"

    @property
    def id(self) -> str:
        return f"t{self.seq}"

    @property
    def run_time(self) -> float:
        return self.duration if self.limit is None else min(self.duration, self.limit)

    @property
    def work(self) -> float:
        return self.gpu * self.nodes * self.run_time

    def req(self, with_limit: bool) -> TaskReq:
        return TaskReq(
            id=self.id,
            seq=self.seq,
            priority=self.prio,
            created_at=T0 + self.arrival,
            cpu=4 * self.gpu,
            memory_gb=32 * self.gpu,
            gpu=self.gpu,
            node_count=self.nodes,
            reservation_id=self.reservation,
            user_id=self.user,
            time_limit_s=self.limit if with_limit else None,
        )


@dataclass(slots=True)
class Window:
    """A reservation: every GPU of `workers` held for `user` from `start` to `end`."""

    id: str
    user: str
    workers: list[int]
    start: float
    end: float


def make_trace(seed: int, n_tasks: int, n_workers: int, load: float) -> tuple[list[Job], list[Window]]:
    rng = random.Random(seed)
    jobs = []
    for seq in range(n_tasks):
        if rng.random() < 0.05:
            nodes, gpu = rng.randint(2, 4), GPUS
        else:
            nodes, gpu = 1, rng.choices((1, 2, 4, 8), (0.40, 0.25, 0.20, 0.15))[0]
        duration = min(24 * 3600.0, max(60.0, rng.lognormvariate(math.log(1800.0), 1.0)))
        # users ask for whole minutes, 1-3x what the task needs; 15% give no limit
        limit = math.ceil(duration * rng.uniform(1.0, 3.0) / 60.0) * 60.0 if rng.random() < 0.85 else None
        prio = rng.choices(tuple(CLASSES), CLASS_WEIGHTS)[0]
        jobs.append(Job(seq, prio, 0.0, gpu, nodes, duration, limit))
    capacity = n_workers * GPUS
    span = sum(j.work for j in jobs) / (load * capacity)  # arrivals spread so that load ~ `load`
    t = 0.0
    for j in jobs:
        t += rng.expovariate(n_tasks / span)
        j.arrival = t
    per = 2 if n_workers >= 10 else 1
    n_res = max(1, n_workers // 33)
    chosen = rng.sample(range(n_workers), n_res * per)
    windows = []
    for k in range(n_res):
        start = span * (k + 1) / (n_res + 1)
        windows.append(
            Window(f"r{k}", f"owner{k}", sorted(chosen[k * per : (k + 1) * per]), start, start + 7200.0)
        )
    # the owners submit into their window about as much work as it holds
    share = 1.5 * per * GPUS / capacity
    for j in jobs:
        for w in windows:
            if j.nodes == 1 and w.start <= j.arrival < w.end and rng.random() < share:
                j.reservation, j.user = w.id, w.user
    return jobs, windows


class Sim:
    """One policy over one trace."""

    def __init__(self, jobs: list[Job], windows: list[Window], n_workers: int, policy: str) -> None:
        self.jobs, self.windows, self.policy = jobs, windows, policy
        self.n = n_workers
        self.ids = [f"w{i:03d}" for i in range(n_workers)]
        self.index = {w: i for i, w in enumerate(self.ids)}
        self.free = [set(range(GPUS)) for _ in range(n_workers)]
        self.cpu, self.mem, self.slots = [CPUS] * n_workers, [MEM] * n_workers, [SLOTS] * n_workers
        self.running: list[dict[str, Release]] = [{} for _ in range(n_workers)]
        self.cache: list[WorkerFree | None] = [None] * n_workers
        self.queue: dict[str, Job] = {}
        self.reqs: dict[str, TaskReq] = {}  # in arrival (= seq) order
        self.holds: dict[str, ReservationHold] = {}
        self.events: list[tuple[float, int, int, object]] = []
        self.counter = 0  # event tie-break: first pushed, first handled
        self.where: dict[int, list[int]] = {}  # seq -> the workers a running task is on
        self.now = 0.0
        self.kept: Promise | None = None  # backfill: the promise the latest decision made
        # fifo: the decision order kept incrementally (aging is p + rate * wait, so before the
        # cap the order is by p - rate * arrival, a constant; capped tasks go first, by seq)
        self.uncapped: list[tuple[float, int]] = []
        self.capped: list[int] = []
        # results
        self.waits: dict[int, list[float]] = {p: [] for p in CLASSES}
        self.gang_waits: list[float] = []
        self.decide_ms: list[float] = []
        self.violations = 0
        self.backfilled = 0
        self.last_end = 0.0
        self.promise: dict[str, float] = {}  # gang -> start its latest shadow promised
        self.owner: str | None = None  # the gang holding the shadow in the latest decision
        self.lost: set[str] = set()  # gangs with a promise that no longer hold the shadow
        self.held_gangs: set[str] = set()
        self.starved: dict[str, str] = {}  # gang -> "kept" / "lost" (the shadow, when it starved)
        # why a promised start moved later: tasks ahead of the owner took capacity, a
        # reservation started, the gang had lost the shadow meanwhile, or anything else (a bug)
        self.replans = {"ahead": 0, "reservation": 0, "regained": 0, "other": 0}
        self.kind = ARRIVAL  # the event just handled
        self.busy = 0  # GPUs in use
        self.waiting_s = 0.0  # time with tasks queued
        self.busy_waiting = 0.0  # GPU-seconds in use while tasks were queued

    # -- the cluster as decide() sees it ---------------------------------------------------------

    def workers(self) -> list[WorkerFree]:
        out = []
        for i in range(self.n):
            w = self.cache[i]
            if w is None:
                w = self.cache[i] = WorkerFree(
                    id=self.ids[i],
                    free_cpu=self.cpu[i],
                    free_memory_gb=self.mem[i],
                    free_gpus=tuple(sorted(self.free[i])),
                    batch_available=self.slots[i],
                    total_cpu=CPUS,
                    total_memory_gb=MEM,
                    total_gpus=GPUS,
                    batch_total=SLOTS,
                    releases=tuple(self.running[i].values()),
                )
            out.append(w)
        return out

    def fifo_head(self, limit: int) -> list[Job]:
        """The first `limit` queued tasks in the decision order."""
        threshold = -(DEFAULT_AGING_CAP - DEFAULT_AGING_RATE * self.now / 3600.0)
        while self.uncapped and self.uncapped[0][0] <= threshold:
            insort(self.capped, self.uncapped.pop(0)[1])
        seqs = self.capped[:limit] + [s for _, s in self.uncapped[: max(0, limit - len(self.capped))]]
        return [self.queue[f"t{s}"] for s in seqs]

    # -- events ----------------------------------------------------------------------------------

    def run(self) -> dict[str, object]:
        for j in self.jobs:
            self.events.append((j.arrival, ARRIVAL, self.counter, j))
            self.counter += 1
        for w in self.windows:
            self.events.append((w.start, RES_START, self.counter, w))
            self.events.append((w.end, RES_END, self.counter + 1, w))
            self.counter += 2
        heapq.heapify(self.events)
        wall = time.perf_counter()
        while self.events:
            at, kind, _, obj = heapq.heappop(self.events)
            self.check_promises(at)
            if self.queue:
                self.waiting_s += at - self.now
                self.busy_waiting += (at - self.now) * self.busy
            self.now, self.kind = at, kind
            if kind == ARRIVAL:
                assert isinstance(obj, Job)
                self.arrive(obj)
            elif kind == COMPLETION:
                assert isinstance(obj, Job)
                self.complete(obj)
            elif kind == RES_START:
                assert isinstance(obj, Window)
                gpus = {self.ids[i]: tuple(range(GPUS)) for i in obj.workers}
                self.holds[obj.id] = ReservationHold(id=obj.id, user_id=obj.user, gpus=gpus)
            else:
                assert isinstance(obj, Window)
                self.holds.pop(obj.id, None)
            self.decide_and_apply()
        assert not self.queue, "tasks left queued"
        return self.report(time.perf_counter() - wall)

    def arrive(self, job: Job) -> None:
        self.queue[job.id] = job
        self.reqs[job.id] = job.req(with_limit=self.policy == "backfill")
        if self.policy == "fifo":
            insort(self.uncapped, (-(job.prio - DEFAULT_AGING_RATE * job.arrival / 3600.0), job.seq))

    def complete(self, job: Job) -> None:
        for i in self.where.pop(job.seq):
            rel = self.running[i].pop(job.id)
            self.free[i] |= set(rel.gpus)
            self.cpu[i] += rel.cpu
            self.mem[i] += rel.memory_gb
            self.slots[i] += 1
            self.cache[i] = None
        self.busy -= job.gpu * job.nodes
        self.last_end = max(self.last_end, self.now)

    def decide_and_apply(self) -> None:
        if not self.queue:
            return
        workers = self.workers()
        head: list[Job] = []
        if self.policy == "fifo":
            # each task needs a GPU: past (free GPUs + 1) tasks nothing more can start
            head = self.fifo_head(sum(len(f) for f in self.free) + 1)
            reqs = [self.reqs[j.id] for j in head]
        else:
            reqs = list(self.reqs.values())
        t0 = time.perf_counter()
        d = decide(reqs, workers, list(self.holds.values()), now=T0 + self.now, promise=self.kept)
        if self.policy == "backfill":
            self.kept = d.promise
        self.decide_ms.append((time.perf_counter() - t0) * 1000.0)
        placements = d.assignments
        if self.policy == "fifo":
            placed = {p.task_id: p for p in placements}
            placements = []
            for j in head:  # nothing after the first task that did not start
                p = placed.get(j.id)
                if p is None:
                    break
                placements.append(p)
        for p in placements:
            self.start(p)
        if self.policy != "fifo":
            self.track_shadow(d.shadow, placements)

    def track_shadow(self, shadow: Shadow | None, placements: list[Placement]) -> None:
        """Keeps each held gang's promised start, and why a promise moved later."""
        owner = self.queue.get(shadow.task_id) if shadow is not None else None
        if owner is None or owner.nodes == 1:
            owner = None
        elif shadow is not None and shadow.start is None:
            self.promise.pop(owner.id, None)  # no known start: nothing promised
            owner = None
        elif shadow is not None and shadow.start is not None:
            start = shadow.start - T0
            old = self.promise.get(owner.id)
            if old is not None and start > old + 1e-6:
                if self.owner != owner.id:
                    cause = "regained"
                elif any(self.ahead(p, owner) for p in placements):
                    cause = "ahead"
                elif self.kind == RES_START:
                    cause = "reservation"
                else:
                    cause = "other"
                self.replans[cause] += 1
            self.promise[owner.id] = start
            self.held_gangs.add(owner.id)
            self.lost.discard(owner.id)
        self.owner = None if owner is None else owner.id
        self.lost.update(g for g in self.promise if g != self.owner)

    def ahead(self, p: Placement, owner: Job) -> bool:
        """Whether a placement came before the owner in the decision order."""
        aged = aged_priority(owner.prio, hours_waited(T0 + owner.arrival, T0 + self.now))
        return (-p.priority_aged, int(p.task_id[1:])) < (-aged, owner.seq)

    def start(self, p: Placement) -> None:
        job = self.queue.pop(p.task_id)
        del self.reqs[p.task_id]
        if self.policy == "fifo":
            self.remove_fifo(job)
        self.promise.pop(job.id, None)
        self.waits[job.prio].append(self.now - job.arrival)
        if job.nodes > 1:
            self.gang_waits.append(self.now - job.arrival)
        self.busy += job.gpu * job.nodes
        self.backfilled += p.backfill
        where = []
        for n in p.nodes:
            i = self.index[n.worker_id]
            gpus = set(n.gpus)
            cpu, mem = 4 * job.gpu, 32 * job.gpu
            if not gpus <= self.free[i] or self.cpu[i] < cpu or self.mem[i] < mem or self.slots[i] < 1:
                self.violations += 1
            self.free[i] -= gpus
            self.cpu[i] -= cpu
            self.mem[i] -= mem
            self.slots[i] -= 1
            at = None if job.limit is None else T0 + self.now + job.limit
            self.running[i][job.id] = Release(at, n.gpus, cpu, mem, 1)
            self.cache[i] = None
            where.append(i)
        self.where[job.seq] = where
        self.counter += 1
        heapq.heappush(self.events, (self.now + job.run_time, COMPLETION, self.counter, job))

    def remove_fifo(self, job: Job) -> None:
        k = bisect_left(self.capped, job.seq)
        if k < len(self.capped) and self.capped[k] == job.seq:
            del self.capped[k]
            return
        key = (-(job.prio - DEFAULT_AGING_RATE * job.arrival / 3600.0), job.seq)
        del self.uncapped[bisect_left(self.uncapped, key)]

    def check_promises(self, t: float) -> None:
        """A gang still queued after the start its shadow promised is starved."""
        for gid, start in list(self.promise.items()):
            if t > start + 1e-6:
                self.starved[gid] = "lost" if gid in self.lost else "kept"
                del self.promise[gid]
                self.lost.discard(gid)

    # -- figures ---------------------------------------------------------------------------------

    def report(self, wall_s: float) -> dict[str, object]:
        classes = {}
        for prio, name in CLASSES.items():
            w = sorted(self.waits[prio])
            bound = (DEFAULT_AGING_CAP - prio) / DEFAULT_AGING_RATE * 3600.0
            classes[name] = {
                "priority": prio,
                "tasks": len(w),
                "wait_mean_min": round(statistics.fmean(w) / 60.0, 1) if w else 0.0,
                "wait_p50_min": round(pct(w, 50) / 60.0, 1),
                "wait_p99_min": round(pct(w, 99) / 60.0, 1),
                "wait_max_h": round((w[-1] if w else 0.0) / 3600.0, 2),
                "aging_bound_h": round(bound / 3600.0, 1),
                "past_aging_bound": sum(1 for x in w if x > bound),
            }
        gangs = sum(1 for j in self.jobs if j.nodes > 1)
        ms = sorted(self.decide_ms)
        return {
            "makespan_h": round(self.last_end / 3600.0, 3),
            "classes": classes,
            "gangs": gangs,
            "gang_wait_mean_min": round(statistics.fmean(self.gang_waits) / 60.0, 1)
            if self.gang_waits
            else 0.0,
            "gangs_held": None if self.policy == "fifo" else len(self.held_gangs),
            "gangs_starved": None if self.policy == "fifo" else len(self.starved),
            "gangs_starved_after_losing_the_shadow": sum(1 for v in self.starved.values() if v == "lost"),
            "shadow_start_moved_later": None if self.policy == "fifo" else dict(self.replans),
            "busy_while_waiting": round(self.busy_waiting / (self.waiting_s * self.n * GPUS), 4)
            if self.waiting_s
            else None,
            "backfilled": self.backfilled,
            "oversubscribed": self.violations,
            "decisions": len(ms),
            "decide_ms_mean": round(statistics.fmean(ms), 3) if ms else 0.0,
            "decide_ms_p99": round(pct(ms, 99), 3),
            "wall_s": round(wall_s, 1),
        }


def pct(sorted_values: list[float], p: float) -> float:
    """Nearest-rank percentile of a sorted list (0 when empty)."""
    if not sorted_values:
        return 0.0
    k = max(0, math.ceil(p / 100.0 * len(sorted_values)) - 1)
    return sorted_values[k]


def ideal(jobs: list[Job], capacity: int) -> dict[str, float]:
    """A lower bound on any schedule's makespan: every task ends no earlier than its arrival
    plus its run time, and from any arrival on, the work arriving from then on needs at least
    work / capacity (packing ignored)."""
    by_arrival = sorted(jobs, key=lambda j: j.arrival)
    bound = max(j.arrival + j.run_time for j in jobs)
    rest = sum(j.work for j in jobs)
    bound = max(bound, rest / capacity)
    for j in by_arrival:
        bound = max(bound, j.arrival + rest / capacity)
        rest -= j.work
    work = sum(j.work for j in jobs)
    return {
        "work_gpu_h": work / 3600.0,
        "makespan_lb_h": bound / 3600.0,
        "ideal_util": work / (capacity * bound),
    }


def simulate(
    seed: int, n_tasks: int, n_workers: int, load: float, policies: tuple[str, ...] = POLICIES
) -> dict:
    jobs, windows = make_trace(seed, n_tasks, n_workers, load)
    capacity = n_workers * GPUS
    best = ideal(jobs, capacity)
    out: dict[str, object] = {
        "config": {
            "seed": seed,
            "tasks": n_tasks,
            "workers": n_workers,
            "gpus_per_worker": GPUS,
            "load": load,
        },
        "trace": {
            "arrival_span_h": round(max(j.arrival for j in jobs) / 3600.0, 2),
            "work_gpu_h": round(best["work_gpu_h"], 1),
            "makespan_lb_h": round(best["makespan_lb_h"], 3),
            "ideal_util": round(best["ideal_util"], 4),
            "gangs": sum(1 for j in jobs if j.nodes > 1),
            "with_limit": sum(1 for j in jobs if j.limit is not None),
            "reservations": len(windows),
            "reservation_tasks": sum(1 for j in jobs if j.reservation),
        },
        "policies": {},
    }
    results: dict[str, dict] = {}
    for policy in policies:
        r = Sim(jobs, windows, n_workers, policy).run()
        makespan = float(r["makespan_h"])  # type: ignore[arg-type]
        r["utilisation"] = round(best["work_gpu_h"] / (capacity * makespan), 4)
        r["util_vs_ideal"] = round(best["makespan_lb_h"] / makespan, 4)
        results[policy] = r
    out["policies"] = results
    return out


def table(res: dict) -> str:
    cfg, tr, pol = res["config"], res["trace"], res["policies"]
    names = list(pol)
    lines = [
        f"simulate: {cfg['workers']} workers x {cfg['gpus_per_worker']} GPUs, {cfg['tasks']} tasks, "
        f"load {cfg['load']}, seed {cfg['seed']}: {tr['work_gpu_h']} GPU-h arriving over "
        f"{tr['arrival_span_h']} h, makespan lower bound {tr['makespan_lb_h']} h, "
        f"{tr['gangs']} gangs, {tr['with_limit']} with a time limit, {tr['reservation_tasks']} "
        f"tasks in {tr['reservations']} reservations",
        f"{'':36}" + "".join(f"{n:>20}" for n in names),
    ]

    def row(label: str, fn) -> None:
        lines.append(f"{label:36}" + "".join(f"{fn(pol[n]):>20}" for n in names))

    row("makespan (h)", lambda r: r["makespan_h"])
    row("GPU utilisation", lambda r: f"{r['utilisation']:.3f}")
    row("utilisation / ideal", lambda r: f"{r['util_vs_ideal']:.3f}")
    row(
        "GPUs busy while tasks wait",
        lambda r: "-" if r["busy_while_waiting"] is None else f"{r['busy_while_waiting']:.3f}",
    )
    row(
        "mean wait low / normal / high (min)",
        lambda r: " / ".join(str(r["classes"][c]["wait_mean_min"]) for c in ("low", "normal", "high")),
    )
    row("mean wait of gangs (min)", lambda r: r["gang_wait_mean_min"])
    for c in ("low", "normal", "high"):
        row(
            f"wait p50 / p99 {c} (min)",
            lambda r, c=c: f"{r['classes'][c]['wait_p50_min']} / {r['classes'][c]['wait_p99_min']}",
        )
    for c in ("low", "normal", "high"):
        b = next(iter(pol.values()))["classes"][c]["aging_bound_h"]
        row(f"longest wait {c} (h; bound {b})", lambda r, c=c: r["classes"][c]["wait_max_h"])
    row("tasks past their aging bound", lambda r: sum(v["past_aging_bound"] for v in r["classes"].values()))
    row(
        "gangs held / starved",
        lambda r: "-" if r["gangs_held"] is None else f"{r['gangs_held']} / {r['gangs_starved']}",
    )
    row(
        "  of which after losing the shadow",
        lambda r: "-" if r["gangs_held"] is None else r["gangs_starved_after_losing_the_shadow"],
    )
    row(
        "shadow start moved later: ahead",
        lambda r: "-" if r["shadow_start_moved_later"] is None else r["shadow_start_moved_later"]["ahead"],
    )
    row(
        "  regained / reservation / other",
        lambda r: (
            "-"
            if r["shadow_start_moved_later"] is None
            else "{regained} / {reservation} / {other}".format(**r["shadow_start_moved_later"])
        ),
    )
    row("backfilled placements", lambda r: r["backfilled"])
    row("oversubscribed placements", lambda r: r["oversubscribed"])
    row("decide() ms mean / p99", lambda r: f"{r['decide_ms_mean']:.2f} / {r['decide_ms_p99']:.2f}")
    row("decisions / wall s", lambda r: f"{r['decisions']} / {r['wall_s']}")
    last = names[-1]
    r = pol[last]
    past = sum(v["past_aging_bound"] for v in r["classes"].values())
    starved = r["gangs_starved"]

    def met(ok: bool) -> str:
        return "met" if ok else "MISSED"

    lines.append(
        f"targets ({last}): utilisation >= 0.9 x ideal {met(r['util_vs_ideal'] >= 0.9)} ({r['util_vs_ideal']:.3f}); "
        f"no gang starved {met(not starved)} ({starved}, {r['gangs_starved_after_losing_the_shadow']} of them after "
        f"a task ahead took the shadow); no wait past the aging bound {met(past == 0)} ({past})"
    )
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--tasks", type=int, default=5000)
    ap.add_argument("--workers", type=int, default=100)
    ap.add_argument(
        "--load", type=float, default=0.95, help="offered GPU load (work / capacity over the span)"
    )
    ap.add_argument("--policies", default=",".join(POLICIES))
    ap.add_argument("--json", action="store_true", help="print one JSON object instead of a table")
    args = ap.parse_args()
    policies = tuple(p for p in args.policies.split(",") if p)
    unknown = set(policies) - set(POLICIES)
    if unknown:
        ap.error(f"unknown policies: {', '.join(sorted(unknown))}")
    res = simulate(args.seed, args.tasks, args.workers, args.load, policies)
    print(json.dumps(res, indent=2) if args.json else table(res))


if __name__ == "__main__":
    main()
