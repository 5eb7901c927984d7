"""Cuts and replica counts together: the best split of one order into S <= K stages on K TPUs.

Stage s of a split runs on r_s >= 1 TPUs (replicas of one segment), sum r_s <= K; each request goes to one
replica of each stage, so the period is (:func:`hardware.terms.period_seconds`)
``max(max_s T_s / r_s, shared link, host)``, the latency ``sum_s T_s``. Over one order's range costs
(:func:`hardware.kernel.range_costs`) a dynamic program over (TPUs used, position) finds, in
O(n^2 K^2) numpy work:

1. the least ``max_s T_s / r_s`` (``F[m, j]``: the best over the stages covering ``order[:j]`` on m TPUs);
2. among the splits within :data:`~respect_pass.plan.REL_TOL` of it, the least latency;
3. where the shared host link binds (its bytes depend on the cuts alone, not on the replicas), the
   split with the fewest link bytes under a cap on ``T_s / r_s``, by bisection over the caps between
   the least ``max T_s / r_s`` and the first split's period: the least period over every split.

The whole model on K TPUs (S = 1) and a K-stage pipeline (every r_s = 1) are two of the splits searched.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from hardware import EdgeTpuSpec
from hardware.kernel import RangeCosts
from hardware.terms import period_seconds, shared_link_per_byte, shared_link_seconds
from tflite_io import StageMapError

from ..plan import REL_TOL

__all__ = ["ReplicaSplit", "replica_split"]

#: At most this many stage-time caps are tried when the shared link binds (each is one DP pass).
MAX_CAP_STEPS = 40


@dataclass(frozen=True)
class ReplicaSplit:
    """Cuts of an order (S - 1 positions), the TPUs of each of its S stages, and their figures (s)."""

    cuts: tuple[int, ...]
    replicas: tuple[int, ...]
    period_s: float
    latency_s: float


@dataclass(frozen=True)
class _Cover:
    """One DP pass: per (non-last TPUs m, position j) the best value and its last stage (start, replicas)."""

    value: np.ndarray
    start: np.ndarray
    reps: np.ndarray


Combine = Callable[[np.ndarray, np.ndarray], np.ndarray]


def _cover(stage: Callable[[int], np.ndarray], tpus: int, first_end: int, combine: Combine, neutral: float) -> _Cover:
    """Best ``combine``-d value of the non-last stages covering ``order[:j]`` on m TPUs, for m < ``tpus``;
    ``stage(r)[i, j]`` is the value of stage ``order[i:j]`` on r TPUs (inf where not allowed)."""
    n1 = stage(1).shape[0]
    value = np.full((tpus, n1), np.inf)
    value[0, 0] = neutral
    start = np.full((tpus, n1), -1, dtype=np.int64)
    reps = np.zeros((tpus, n1), dtype=np.int64)
    cols = np.arange(n1)
    for m in range(1, tpus):
        for r in range(1, m + 1):
            w = stage(r)
            if m == r:  # the first stage: order[0:j], every model input read in it
                cand, at = combine(np.full(n1, neutral), w[0]), np.zeros(n1, dtype=np.int64)
                cand[cols < first_end] = np.inf
            else:
                rows = np.flatnonzero(np.isfinite(value[m - r]))
                if not len(rows):
                    continue
                both = combine(value[m - r, rows][:, None], w[rows])
                best = both.argmin(axis=0)
                cand, at = both[best, cols], rows[best]
            better = cand < value[m]
            value[m, better], start[m, better], reps[m, better] = cand[better], at[better], r
    return _Cover(value, start, reps)


def _finish(
    cover: _Cover, last: Callable[[int], np.ndarray], tpus: int, combine: Combine, neutral: float
) -> tuple[float, tuple[int, ...], tuple[int, ...]]:
    """The best value over the last stage ``order[i:]`` on r TPUs after m non-last TPUs (m + r <= ``tpus``),
    with its cuts and replicas (stage order)."""
    best: tuple[float, int, int, int] = (np.inf, -1, -1, -1)
    for m in range(tpus):
        for r in range(1, tpus - m + 1):
            wl = last(r)
            if m == 0:
                val, i = float(combine(np.asarray(neutral), np.asarray(wl[0]))), 0
            else:
                vals = combine(cover.value[m], wl)
                i = int(np.argmin(vals))
                val = float(vals[i])
            if val < best[0]:
                best = (val, m, r, i)
    val, m, r, pos = best
    if not np.isfinite(val):
        raise StageMapError(f"no valid split of this order onto {tpus} TPUs", tpus)
    cuts, reps = ([pos] if m > 0 else []), [r]  # the last stage starts at pos
    while m > 0:
        r_s, i = int(cover.reps[m, pos]), int(cover.start[m, pos])
        reps.append(r_s)
        if i > 0:
            cuts.append(i)
        m, pos = m - r_s, i
    return val, tuple(reversed(cuts)), tuple(reversed(reps))


def _solve(
    rc: RangeCosts, tpus: int, value: Callable[[int], np.ndarray], last: Callable[[int], np.ndarray], minmax: bool
) -> tuple[float, tuple[int, ...], tuple[int, ...]]:
    """One DP pass (min-max of the stage values, or their sum) and its best split."""
    combine: Combine = np.maximum if minmax else np.add
    neutral = -np.inf if minmax else 0.0
    cover = _cover(value, tpus, rc.min_first_end, combine, neutral)
    return _finish(cover, last, tpus, combine, neutral)


def _split_figures(rc: RangeCosts, cuts: tuple[int, ...], reps: tuple[int, ...]) -> tuple[np.ndarray, float]:
    """(stage times, host-link bytes) of the split ``cuts`` of ``rc.order``."""
    if rc.link is None or rc.link_last is None:
        raise ValueError("replica_split needs the whole range matrices")
    b = [0, *cuts, len(rc.order)]
    times = [rc.time[b[s], b[s + 1]] for s in range(len(reps) - 1)] + [rc.time_last[b[-2]]]
    link = sum(rc.link[b[s], b[s + 1]] for s in range(len(reps) - 1)) + rc.link_last[b[-2]]
    return np.asarray(times), float(link)


def replica_split(rc: RangeCosts, tpus: int, spec: EdgeTpuSpec, host_s: float = 0.0) -> ReplicaSplit:
    """The best split of ``rc.order`` into S <= ``tpus`` stages with replicas (see the module docstring);
    ``host_s`` is the host ops' time per request (the host's bound on the period)."""
    if tpus < 1:
        raise StageMapError(f"need at least one TPU, got {tpus}", tpus)
    per_r = {r: rc.time / r for r in range(1, tpus + 1)}
    per_r_last = {r: rc.time_last / r for r in range(1, tpus + 1)}
    bound, _, _ = _solve(rc, tpus, per_r.__getitem__, per_r_last.__getitem__, minmax=True)
    found = _least_sum(rc, tpus, bound * (1 + REL_TOL), rc.time, rc.time_last, per_r, per_r_last)
    times, link = _split_figures(rc, *found)
    if shared_link_per_byte(spec) > 0 and shared_link_seconds(spec, link) > bound * (1 + REL_TOL):
        found = _shared_link_split(rc, tpus, spec, bound, found, per_r, per_r_last)
        times, link = _split_figures(rc, *found)
    period = period_seconds(spec, times, link, found[1], host_s)
    return ReplicaSplit(found[0], found[1], period, float(times.sum()))


def _least_sum(
    rc: RangeCosts,
    tpus: int,
    cap: float,
    weight: np.ndarray,
    weight_last: np.ndarray,
    per_r: dict[int, np.ndarray],
    per_r_last: dict[int, np.ndarray],
) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """The split with the least sum of ``weight`` over its stages among those with every ``T_s / r_s``
    within ``cap`` (cuts, replicas)."""

    value = {r: np.where(t <= cap, weight, np.inf) for r, t in per_r.items()}
    last = {r: np.where(t <= cap, weight_last, np.inf) for r, t in per_r_last.items()}
    _, cuts, reps = _solve(rc, tpus, value.__getitem__, last.__getitem__, minmax=False)
    return cuts, reps


def _shared_link_split(
    rc: RangeCosts,
    tpus: int,
    spec: EdgeTpuSpec,
    bound: float,
    first: tuple[tuple[int, ...], tuple[int, ...]],
    per_r: dict[int, np.ndarray],
    per_r_last: dict[int, np.ndarray],
) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """Where the shared link binds: the split of least period, max(cap, link time of the fewest link bytes
    under the cap), by bisection over the stage-time caps from ``bound`` to ``first``'s period."""
    assert rc.link is not None and rc.link_last is not None
    times, link = _split_figures(rc, *first)
    upper = max(float((times / np.asarray(first[1])).max()), float(shared_link_seconds(spec, link)))
    values = np.concatenate([m[np.isfinite(m)].ravel() for m in (*per_r.values(), *per_r_last.values())])
    caps = np.unique(values[(values >= bound) & (values <= upper)])
    if len(caps) > MAX_CAP_STEPS * 1000:
        caps = caps[:: len(caps) // (MAX_CAP_STEPS * 1000) + 1]
    best, best_key = first, (upper, float(times.sum()))
    lo, hi = 0, len(caps) - 1
    for _ in range(MAX_CAP_STEPS):
        if lo > hi:
            break
        mid = (lo + hi) // 2
        split = _least_sum(rc, tpus, float(caps[mid]) * (1 + REL_TOL), rc.link, rc.link_last, per_r, per_r_last)
        t, b = _split_figures(rc, *split)
        key = (max(float((t / np.asarray(split[1])).max()), float(shared_link_seconds(spec, b))), float(t.sum()))
        if key < best_key:
            best, best_key = split, key
        if shared_link_seconds(spec, b) <= caps[mid]:
            hi = mid - 1  # the link fits under this cap: a smaller cap may do better
        else:
            lo = mid + 1
    return best
