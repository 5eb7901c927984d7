"""Local improvement of a ``respect`` plan: cheap moves on the stage map, then ``dp`` re-cuts.

Two kinds of neighbours of a plan (a monotone stage map, i.e. a split order
plus cuts):

* *re-orderings*: stage-major orders of the same map with the ops inside each
  stage listed differently (by score, as soon as possible, as late as
  possible, perturbed scores); ``dp`` may then move any cut;
* *moves*: one op of the slowest stage goes to a neighbouring stage, which
  keeps the map monotone when every successor is in a later stage (forward)
  or every predecessor in an earlier one (backward, never for ops pinned to
  the last stage). Moves are scored on the map itself with
  :func:`hardware.kernel.map_stage_times` (O(n) per move, no range matrices), applied greedily
  while they lower (bottleneck, latency), and the result joins the
  re-orderings as one more order for ``dp``.

Every candidate order's best split is never worse than the plan it came from,
so :func:`refine` never makes a plan worse.
"""
from __future__ import annotations

import numpy as np

from ..orders import split_order
from hardware.kernel import RangeCosts, map_period_s, map_stage_times, range_costs

from .decode import greedy_order
from .features import GraphArrays
from .split import best_split

__all__ = ["range_stage_times", "movable_ops", "improve_by_moves", "refine"]

_REL = 1e-9


def range_stage_times(rc: RangeCosts, cuts: list[int], num_stages: int) -> np.ndarray:
    """(K,) seconds of each stage of the split ``cuts`` of ``rc.order``."""
    bounds = [0, *cuts, len(rc.order)]
    times = [rc.time[bounds[i], bounds[i + 1]] for i in range(num_stages - 1)]
    return np.asarray(times + [rc.time_last[bounds[-2]]])


def movable_ops(ga: GraphArrays, stages: np.ndarray, stage: int, num_stages: int) -> list[tuple[int, int]]:
    """(op, +1 or -1) moves of ops of ``stage`` to a neighbouring stage that keep the map monotone."""
    min_succ = np.full(ga.n, num_stages, dtype=np.int64)
    np.minimum.at(min_succ, ga.src, stages[ga.dst])
    max_pred = np.full(ga.n, -1, dtype=np.int64)
    np.maximum.at(max_pred, ga.dst, stages[ga.src])
    here = stages == stage
    fwd = np.flatnonzero(here & (min_succ > stage)) if stage < num_stages - 1 else np.zeros(0, dtype=np.int64)
    bwd = np.flatnonzero(here & (max_pred < stage) & ~ga.pinned) if stage > 0 else np.zeros(0, dtype=np.int64)
    return [(v, +1) for v in fwd.tolist()] + [(v, -1) for v in bwd.tolist()]


def _key(times: np.ndarray) -> tuple[float, float]:
    return float(times.max()), float(times.sum())


def _better(a: tuple[float, float], b: tuple[float, float]) -> bool:
    return a[0] < b[0] * (1 - _REL) or (a[0] <= b[0] * (1 + _REL) and a[1] < b[1] * (1 - _REL))


def improve_by_moves(ga: GraphArrays, stages: np.ndarray, num_stages: int, limit: int, steps: int
                     ) -> tuple[np.ndarray, int]:
    """Greedy descent: at most ``steps`` times, apply the best of at most ``limit`` moves out of the
    slowest stage (ops with the most own work first) if it lowers (bottleneck, latency); the map and
    the number of moves applied. The first stage must keep an op that reads every model input."""
    own = ga.op_s + ga.param_bytes / ga.spec.stream_bytes_per_s
    stages = stages.copy()
    times = map_stage_times(ga, stages, num_stages)
    done = 0
    for _ in range(steps):
        worst = int(np.argmax(times))
        if (stages == worst).sum() < 2:
            break  # a move would leave the stage empty
        moves = sorted(movable_ops(ga, stages, worst, num_stages), key=lambda m: -own[m[0]])[:limit]
        best: tuple[np.ndarray, int, int] | None = None
        for v, step in moves:
            stages[v] += step
            if all((stages[r] == 0).any() for r in ga.input_readers):
                t = map_stage_times(ga, stages, num_stages)
                if _better(_key(t), _key(times if best is None else best[0])):
                    best = (t, v, step)
            stages[v] -= step
        if best is None:
            break
        times, v, step = best
        stages[v] += step
        done += 1
    return stages, done


def refine(ga: GraphArrays, scores: np.ndarray, order: np.ndarray, cuts: list[int], key: tuple[float, float],
           num_stages: int, rounds: int, rng: np.random.Generator, moves: int | None = None
           ) -> tuple[np.ndarray, list[int], tuple[float, float], int]:
    """Improve a split order while it helps (at most ``rounds`` times); see the module docstring.

    ``moves`` caps the moves tried per step (default 4000 / n, between 4 and 32; 0 turns moves off).
    ``key`` and the returned (period, latency) are the device model's figures of the stage map
    (:func:`hardware.kernel.map_period_s`). Returns the order, cuts, that key and the rounds that helped.
    """
    limit = moves if moves is not None else max(4, min(32, 4000 // max(ga.n, 1)))
    improved = 0
    for _ in range(rounds):
        stages = np.asarray(split_order(order.tolist(), cuts, ga.n))
        variants = [greedy_order(scores, ga, stages), greedy_order(-ga.depth.astype(float), ga, stages),
                    greedy_order(ga.rev_depth.astype(float), ga, stages)]
        variants += [greedy_order(scores + rng.gumbel(size=ga.n), ga, stages) for _ in range(2)]
        if limit > 0 and num_stages > 1:
            moved, applied = improve_by_moves(ga, stages, num_stages, limit, steps=4 * num_stages)
            if applied:
                variants.append(greedy_order(scores, ga, moved))
        seen, uniq = {order.tobytes()}, []
        for v in variants:
            if v.tobytes() not in seen:
                seen.add(v.tobytes())
                uniq.append(v)
        if not uniq:
            break
        try:
            best, new_cuts, _, _ = best_split([range_costs(ga, v) for v in uniq], num_stages)
        except ValueError:
            break  # no variant has a valid split
        # judged as the written segments are costed (the ranges of an order cost its ops in that sequence)
        new_key = map_period_s(ga, np.asarray(split_order(uniq[best].tolist(), new_cuts, ga.n)), num_stages)
        if _better(new_key, key):
            order, cuts, key = uniq[best], new_cuts, new_key
            improved += 1
        else:
            break
    return order, cuts, key, improved
