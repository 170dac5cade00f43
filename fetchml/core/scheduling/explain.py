"""Pending reasons: why a task was not placed, as text for people.

`never` tells a shape no worker could ever host (even empty) from one that waits; `reason`
names what a waiting shape waits for, against the capacity at its first failure: the shadow
held for a blocked task, tasks ahead of it, reservations, or the resource it lacks (with the
largest free amount, so a user can see how far off it is). The stable prefixes and the reason
kinds are in `fetchml.core.scheduling.types`. Each is computed once per shape, not per task.

Pure: reads the `Cluster`, changes nothing but its snapshot cache.
"""

from __future__ import annotations

from fetchml.core.scheduling.cluster import Cluster, Shape
from fetchml.core.scheduling.types import (
    KIND_NEVER,
    KIND_PRIORITY,
    KIND_RESERVATION,
    KIND_RESOURCE,
    KIND_SHADOW,
    REASON_NEVER,
    REASON_PRIORITY,
    REASON_PROMISED,
    REASON_RESERVATION,
    REASON_SHADOW,
)

__all__ = ["fits", "fmt_duration", "hosts", "never", "reason", "resource_text", "shadow_wait_text"]


def _plural(n: int, word: str) -> str:
    return f"{n} {word}" if n == 1 else f"{n} {word}s"


def _gpu_text(sh: Shape) -> str:
    gpus = _plural(sh.gpu, "GPU")
    return f"{gpus} of type {sh.gtype_text}" if sh.gtype else gpus


def fmt_duration(seconds: float) -> str:
    """A wait for people, rounded down to the minute (so "at most" claims stay true)."""
    minutes = int(max(0.0, seconds) // 60)
    if minutes < 1:
        return "under a minute"
    days, rest = divmod(minutes, 24 * 60)
    hours, mins = divmod(rest, 60)
    if days:
        return f"{days}d {hours}h" if hours else f"{days}d"
    if hours:
        return f"{hours}h {mins}m" if mins else f"{hours}h"
    return f"{mins}m"


def never(cluster: Cluster, sh: Shape) -> tuple[int, str] | None:
    """A never-fit reason when no worker passed in (active or not), even empty, can host it."""
    hosts = 0
    cands = list(cluster.totals.values())
    for wt, tg, ts, tc, tm in cands:
        if (
            (sh.gpu == 0 or ((sh.gtype is None or wt == sh.gtype) and tg >= sh.gpu))
            and ts >= 1
            and tc >= sh.cpu
            and tm >= sh.mem
        ):
            hosts += 1
    if hosts >= sh.nodes:
        return None
    if hosts:
        return KIND_NEVER, (
            f"{REASON_NEVER}: needs {sh.nodes} nodes on distinct workers; "
            f"only {_plural(hosts, 'worker')} could ever host one"
        )
    if not cands:
        return KIND_NEVER, f"{REASON_NEVER}: no workers"
    if sh.gpu:
        if sh.gtype is not None:
            cands = [c for c in cands if c[0] == sh.gtype]
            if not cands:
                return KIND_NEVER, f"{REASON_NEVER}: needs {_gpu_text(sh)}; no worker has that type"
        most = max(c[1] for c in cands)
        if most < sh.gpu:
            return KIND_NEVER, f"{REASON_NEVER}: needs {_gpu_text(sh)} on one worker; the largest has {most}"
        cands = [c for c in cands if c[1] >= sh.gpu]
    cands = [c for c in cands if c[2] >= 1]
    if not cands:
        return KIND_NEVER, f"{REASON_NEVER}: no worker that could host it has a batch slot"
    most = max(c[3] for c in cands)
    if most < sh.cpu:
        return KIND_NEVER, f"{REASON_NEVER}: needs {_plural(sh.cpu, 'CPU')}; the largest worker has {most}"
    cands = [c for c in cands if c[3] >= sh.cpu]
    most = max(c[4] for c in cands)
    return KIND_NEVER, f"{REASON_NEVER}: needs {sh.mem} GB memory; the largest worker has {most} GB"


def hosts(
    cluster: Cluster,
    sh: Shape,
    snap: list[tuple[int, int, int, int, dict[str, int]]],
    release: bool = False,
    enough: int | None = None,
) -> list[int]:
    """Workers of a snapshot on which one node of the shape fits (release: ignore reservations).

    Stops once `enough` are found."""
    out = []
    c, m, g, t, res = sh.cpu, sh.mem, sh.gpu, sh.gtype, sh.res
    gtype = cluster.gtype
    for i, (cpu, mem, slots, free, rf) in enumerate(snap):
        if slots < 1 or cpu < c or mem < m:
            continue
        if g:
            if t is not None and gtype[i] != t:
                continue
            usable = free + (sum(rf.values()) if release else rf.get(res, 0) if res else 0)
            if usable < g:
                continue
        out.append(i)
        if len(out) == enough:
            break
    return out


def fits(cluster: Cluster, sh: Shape, snap: list[tuple[int, int, int, int, dict[str, int]]]) -> bool:
    return len(hosts(cluster, sh, snap, enough=sh.nodes)) >= sh.nodes


def reason(cluster: Cluster, sh: Shape) -> tuple[int, str]:
    """Why the shape does not fit now (called once per shape, at its first failure)."""
    if sh.never is not None:
        return sh.never
    if cluster.shadow is not None and fits(cluster, sh, cluster.snapshot(with_shadow=True)):
        text = REASON_PROMISED if cluster.promised else REASON_SHADOW
        return KIND_SHADOW, f"{text} {cluster.shadow.task_id}{shadow_wait_text(cluster)}"
    if fits(cluster, sh, cluster.initial):
        return KIND_PRIORITY, REASON_PRIORITY
    released = hosts(cluster, sh, cluster.initial, release=True)
    if len(released) >= sh.nodes:
        names = sorted({r for i in released for r, k in cluster.initial[i][4].items() if k and r != sh.res})
        shown = ", ".join(names[:3]) + (f" and {len(names) - 3} more" if len(names) > 3 else "")
        return KIND_RESERVATION, f"{REASON_RESERVATION} {shown}"
    if sh.nodes > 1:
        fit_now = len(hosts(cluster, sh, cluster.snapshot()))
        return KIND_RESOURCE, f"waiting for {sh.nodes} nodes; {fit_now} fit now"
    return KIND_RESOURCE, resource_text(cluster, sh)


def shadow_wait_text(cluster: Cluster) -> str:
    """', expected to start in 1h 5m; ...' when the shadow's start is known, else ''."""
    if cluster.shadow is None or cluster.shadow.start is None:
        return ""
    wait = fmt_duration(cluster.shadow.start - cluster.now)
    until = wait if cluster.until is None else fmt_duration(cluster.until - cluster.now)
    return f", expected to start in {wait}; a task with a time limit of at most {until} may use it"


def resource_text(cluster: Cluster, sh: Shape) -> str:
    ids = cluster.ids
    cands = list(range(cluster.n))
    if sh.gpu:
        if sh.gtype is not None:
            cands = [i for i in cands if cluster.gtype[i] == sh.gtype]
            if not cands:
                return f"needs {_gpu_text(sh)}; no active worker has that type"
        usable = {i: len(cluster.free[i]) + len(cluster.rfree[i].get(sh.res or "", ())) for i in cands}
        best = max(cands, key=lambda i: (usable[i], -i))
        if usable[best] < sh.gpu:
            return f"needs {_gpu_text(sh)}; largest free: {usable[best]} on {ids[best]}"
        cands = [i for i in cands if usable[i] >= sh.gpu]
    with_slot = [i for i in cands if cluster.slots[i] > 0]
    if not with_slot:
        where = f"the {_plural(len(cands), 'worker')} with the GPUs" if sh.gpu else "any active worker"
        return f"needs a free batch slot; none free on {where}"
    best = max(with_slot, key=lambda i: (cluster.cpu[i], -i))
    if cluster.cpu[best] < sh.cpu:
        return f"needs {_plural(sh.cpu, 'CPU')}; largest free: {cluster.cpu[best]} on {ids[best]}"
    cands = [i for i in with_slot if cluster.cpu[i] >= sh.cpu]
    best = max(cands, key=lambda i: (cluster.mem[i], -i))
    return f"needs {sh.mem} GB memory; largest free: {cluster.mem[best]} GB on {ids[best]}"
