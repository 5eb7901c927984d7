"""Local improvement of a ``respect`` plan: cheap moves on the stage map, then ``dp`` re-cuts.

Two kinds of neighbours of a plan (a monotone stage map, i.e. a split order
plus cuts):

* *re-orderings*: stage-major orders of the same map with the ops inside each
  stage listed differently (by score, as soon as possible, as late as
  possible, fewest live activation bytes first; perturbed scores with ``refine(gumbel_variants=)``); ``dp`` may
  then move any cut;
* *moves* out of the slowest stage to a neighbouring stage:

  - *single-op moves*: one op, which keeps the map monotone when every successor is in a later
    stage (forward) or every predecessor in an earlier one (backward, never for ops pinned to the
    last stage);
  - *block moves* (:func:`block_moves`): a branch or a whole cell at once, the op plus all its
    descendants within the stage (forward) or plus all its ancestors within the stage (backward).
    On a monotone map every path between two ops of one stage stays in that stage, so such a block
    has no edge back into what it leaves: moving it keeps the map monotone. A block never takes
    every op of its stage, backward never carries an op pinned to the last stage, and stage 0 keeps
    an op reading every model input and the ops pinned first. Blocks are tried in order of how
    close their own work is to half the gap between the slowest stage and the neighbour (the move
    that would level the two), at most ``blocks`` of them per step. On NASNet-like graphs
    (many parallel branches per cell) a single op can rarely leave the slowest stage alone: its
    siblings in the branch hold it back.

  Moves are scored on the map itself with :func:`hardware.kernel.map_stage_times_many` (O(n) per move,
  a step's moves in one pass, no range matrices) and applied greedily while they lower (bottleneck,
  latency); the result joins the re-orderings as one more order for ``dp`` and, with block moves on,
  also competes as it stands (its stage-major order cut at its own stage boundaries, costed by
  :func:`hardware.kernel.map_period_s`).

When no move out of the slowest stage helps, *exchanges* (``refine(swaps=)`` candidates per side,
:data:`SWAPS` by default) trade one of its moves for a move of the neighbouring stage's ops (single or
block) into it: on wide cells the boundary often has to swap one branch for another, neither of which
can cross alone.

Every candidate is accepted only when its (period, latency) under the device model beats the
plan's, so :func:`refine` never makes a plan worse. ``refine(blocks=0)`` turns block moves, the
exchanges and the direct candidate off: the refinement then moves single ops only.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from hardware.kernel import RangeCosts, map_period_s, map_stage_times, map_stage_times_many
from hardware.terms import own_seconds

from ..orders import split_order
from ..plan import REL_TOL
from ..policy.decode import greedy_order, live_order
from ..policy.features import GraphArrays
from .split import best_split, bounded_range_costs

__all__ = [
    "SWAPS",
    "Refined",
    "range_stage_times",
    "movable_ops",
    "block_moves",
    "default_block_limit",
    "improve_by_moves",
    "refine",
]

#: Candidates per side of the exchanges :func:`improve_by_moves` tries when no move helps, by default.
SWAPS = 12


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


def _own_work(ga: GraphArrays) -> np.ndarray:
    """(n,) seconds an op costs on its own: compute plus its parameters streamed once."""
    return own_seconds(ga.spec, ga.op_s, ga.param_bytes)


def block_moves(
    ga: GraphArrays, stages: np.ndarray, stage: int, num_stages: int, own: np.ndarray | None = None
) -> list[tuple[np.ndarray, int, float]]:
    """(ops, +1 or -1, own work in s) of every block of >= 2 ops of ``stage`` that can move to a neighbouring
    stage together keeping the map monotone: an op and its descendants in the stage (+1, unless ``stage`` is
    the last) or an op and its ancestors in the stage (-1, unless ``stage`` is 0 or the block holds an op
    pinned to the last stage). A block never takes the whole stage. ``stages`` must be a monotone map.
    Whether stage 0 keeps its input readers and first-pinned ops is the caller's check."""
    own = _own_work(ga) if own is None else own
    here = np.flatnonzero(stages == stage)
    m = len(here)
    if m < 3:
        return []  # a block of >= 2 ops would empty the stage
    sub = ga.ancestors[np.ix_(here, here)]  # sub[i, j]: here[j] is a proper ancestor of here[i]
    w = own[here]
    out: list[tuple[np.ndarray, int, float]] = []
    if stage < num_stages - 1:  # column j: the descendants of here[j] in the stage
        size = sub.sum(axis=0) + 1
        work = w @ sub + w
        for j in np.flatnonzero((size >= 2) & (size < m)).tolist():
            mask = sub[:, j].copy()
            mask[j] = True
            out.append((here[mask], +1, float(work[j])))
    if stage > 0:  # row i: the ancestors of here[i] in the stage
        size = sub.sum(axis=1) + 1
        work = sub @ w + w
        pinned = ga.pinned[here]
        has_pin = pinned | (sub @ pinned.astype(np.int64) > 0)
        for i in np.flatnonzero((size >= 2) & (size < m) & ~has_pin).tolist():
            mask = sub[i].copy()
            mask[i] = True
            out.append((here[mask], -1, float(work[i])))
    return out


def _key(times: np.ndarray) -> tuple[float, float]:
    return float(times.max()), float(times.sum())


def _better(a: tuple[float, float], b: tuple[float, float]) -> bool:
    return a[0] < b[0] * (1 - REL_TOL) or (a[0] <= b[0] * (1 + REL_TOL) and a[1] < b[1] * (1 - REL_TOL))


def _ranked_blocks(
    ga: GraphArrays, stages: np.ndarray, worst: int, num_stages: int, times: np.ndarray, own: np.ndarray, limit: int
) -> list[tuple[np.ndarray, int]]:
    """The ``limit`` blocks of stage ``worst`` whose own work is closest to half its gap to the target stage."""
    blocks = block_moves(ga, stages, worst, num_stages, own)
    if len(blocks) > limit:
        half = {s: 0.5 * (times[worst] - times[worst + s]) for s in (-1, 1) if 0 <= worst + s < num_stages}
        blocks.sort(key=lambda b: abs(b[2] - half[b[1]]))
    return [(ops, step) for ops, step, _ in blocks[:limit]]


def improve_by_moves(
    ga: GraphArrays, stages: np.ndarray, num_stages: int, limit: int, steps: int, blocks: int = 0, swaps: int = 0
) -> tuple[np.ndarray, int]:
    """Greedy descent: at most ``steps`` times, apply the best of at most ``limit`` single-op moves (ops
    with the most own work first) and ``blocks`` block moves (:func:`block_moves`) out of the slowest stage
    if it lowers (bottleneck, latency); the map and the number of moves applied. The first stage must keep
    an op that reads every model input (and every op pinned to it). With ``swaps`` > 0, a step where no
    move helps tries exchanges with a neighbouring stage instead (:func:`_best_swap`)."""
    own = _own_work(ga)
    stages = stages.copy()
    times = map_stage_times(ga, stages, num_stages)
    done = 0
    for _ in range(steps):
        worst = int(np.argmax(times))
        if (stages == worst).sum() < 2:
            break  # a move would leave the stage empty
        singles = sorted(movable_ops(ga, stages, worst, num_stages), key=lambda m: -own[m[0]])[:limit]
        cands: list[tuple[np.ndarray | int, int]] = list(singles)
        if blocks > 0:
            cands += _ranked_blocks(ga, stages, worst, num_stages, times, own, blocks)
        maps = np.repeat(stages[None, :], len(cands), axis=0)
        for i, (ops, step) in enumerate(cands):
            maps[i, ops] += step
        best = _best_map(ga, maps[_keeps_inputs(ga, maps)], num_stages, times)
        if best is None and swaps > 0:
            found = _best_swap(ga, stages, worst, num_stages, times, own, cands, swaps)
            if found is not None:
                times, stages = found
                done += 1
                continue
        if best is None:
            break
        times, stages = best
        done += 1
    return stages, done


def _best_swap(
    ga: GraphArrays,
    stages: np.ndarray,
    worst: int,
    num_stages: int,
    times: np.ndarray,
    own: np.ndarray,
    cands: list[tuple[np.ndarray | int, int]],
    swaps: int,
) -> tuple[np.ndarray, np.ndarray] | None:
    """The best improving exchange between the slowest stage and a neighbour: one of its moves out (from
    ``cands``) together with one move of the neighbour's ops (single or block) into it, each side limited
    to ``swaps`` candidates; (times, map) or None. Used when no one-way move helps: on wide cells the
    stage boundary often has to trade a branch for another, neither of which can cross alone."""
    pool: list[tuple[np.ndarray, int]] = []
    for step in (+1, -1):
        nb = worst + step
        if not 0 <= nb < num_stages or (stages == nb).sum() < 2:
            continue
        outs = [(ops, s) for ops, s in cands if s == step][:swaps]
        singles = sorted(movable_ops(ga, stages, nb, num_stages), key=lambda m: -own[m[0]])
        ins: list[np.ndarray | int] = []
        ins += [v for v, s in singles if s == -step][:swaps]
        blocks = sorted((b for b in block_moves(ga, stages, nb, num_stages, own) if b[1] == -step), key=lambda b: b[2])
        ins += [ops for ops, _, _ in blocks[: max(0, swaps - len(ins))]]
        for out_ops, _ in outs:
            for in_ops in ins:
                m = stages.copy()
                m[out_ops] += step
                m[in_ops] -= step
                pool.append((m, nb))
    if not pool:
        return None
    maps = np.stack([m for m, _ in pool])
    nbs = np.array([nb for _, nb in pool])
    ok = (maps[:, ga.src] <= maps[:, ga.dst]).all(axis=1)  # still monotone
    ok &= (maps == nbs[:, None]).any(axis=1) & (maps == worst).any(axis=1)  # neither stage emptied
    return _best_map(ga, maps[ok & _keeps_inputs(ga, maps)], num_stages, times)


def _keeps_inputs(ga: GraphArrays, maps: np.ndarray) -> np.ndarray:
    """(M,) whether each map keeps, in stage 0, an op of every set that stage 0 must hold one of."""
    ok = np.ones(len(maps), dtype=bool)
    for r in ga.input_readers:
        ok &= (maps[:, r] == 0).any(axis=1)
    return ok


def _best_map(ga: GraphArrays, maps: np.ndarray, num_stages: int, times: np.ndarray) -> tuple[np.ndarray, np.ndarray] | None:
    """(stage times, map) of the first of ``maps`` with the best (bottleneck, latency), if it beats ``times``;
    the maps are costed in one pass (:func:`hardware.kernel.map_stage_times_many`)."""
    if not len(maps):
        return None
    found = map_stage_times_many(ga, maps, num_stages)
    best: int | None = None
    for i, t in enumerate(found):
        if _better(_key(t), _key(times if best is None else found[best])):
            best = i
    return None if best is None else (found[best], maps[best].copy())


def _stage_cuts(stages: np.ndarray, order: np.ndarray, num_stages: int) -> list[int]:
    """Cuts of a stage-major ``order`` of the map ``stages`` at its stage boundaries."""
    return [int(np.searchsorted(stages[order], s)) for s in range(1, num_stages)]


def default_block_limit(n: int) -> int:
    """Block moves tried per step by default: about 16000 / n, between 8 and 48."""
    return max(8, min(48, 16000 // max(n, 1)))


class Refined(NamedTuple):
    """What :func:`refine` returns: the order, its cuts, their (period, latency) and the rounds that helped."""

    order: np.ndarray
    cuts: list[int]
    key: tuple[float, float]
    rounds: int


#: A candidate plan: a split order, its cuts and their (period, latency).
_Found = tuple[np.ndarray, list[int], tuple[float, float]]


def refine(
    ga: GraphArrays,
    scores: np.ndarray,
    order: np.ndarray,
    cuts: list[int],
    key: tuple[float, float],
    num_stages: int,
    rounds: int,
    rng: np.random.Generator,
    moves: int | None = None,
    blocks: int | None = None,
    swaps: int = SWAPS,
    gumbel_variants: int = 0,
) -> Refined:
    """Improve a split order while it helps (at most ``rounds`` times); see the module docstring.

    ``moves`` caps the single-op moves tried per step (default 4000 / n, between 4 and 32; 0 turns them
    off); ``blocks`` the block moves (default :func:`default_block_limit`; 0 turns them off); ``swaps``
    the exchanges per side when no move helps (only with block moves); ``gumbel_variants`` the re-orderings
    by Gumbel-perturbed scores per round (off: on the benchmark suites, zoo K=2..8, 18 synthetic and 18
    NASNet-style graphs, two of them changed one period by 0.02% and cost a fifth of respect's time).
    ``key`` and the returned (period, latency) are the device model's figures of the stage map
    (:func:`hardware.kernel.map_period_s`).
    """
    limit = moves if moves is not None else max(4, min(32, 4000 // max(ga.n, 1)))
    blocks = default_block_limit(ga.n) if blocks is None else blocks
    improved = 0
    for _ in range(rounds):
        stages = np.asarray(split_order(order.tolist(), cuts, ga.n))
        variants = _reorderings(ga, scores, stages, rng, gumbel_variants)
        direct: _Found | None = None
        if (limit > 0 or blocks > 0) and num_stages > 1:
            moved, applied = improve_by_moves(
                ga, stages, num_stages, limit, steps=4 * num_stages, blocks=blocks, swaps=swaps if blocks else 0
            )
            if applied:
                moved_order = greedy_order(scores, ga, moved)
                variants.append(moved_order)
                if blocks > 0:  # the moved map as it stands, cut at its own stage boundaries
                    direct = (moved_order, _stage_cuts(moved, moved_order, num_stages), map_period_s(ga, moved, num_stages))
        found = _best_variant(ga, _new_orders(order, variants), num_stages, key, cuts)
        if direct is not None and (found is None or _better(direct[2], found[2])):
            found = direct
        if found is None or not _better(found[2], key):
            break
        order, cuts, key = found
        improved += 1
    return Refined(order, cuts, key, improved)


def _reorderings(
    ga: GraphArrays, scores: np.ndarray, stages: np.ndarray, rng: np.random.Generator, gumbel_variants: int
) -> list[np.ndarray]:
    """Stage-major orders of the map ``stages``: by the policy's scores, by depth (both ways), fewest live
    bytes first (by scores and plain), and ``gumbel_variants`` by perturbed scores."""
    variants = [
        greedy_order(scores, ga, stages),
        greedy_order(-ga.depth.astype(float), ga, stages),
        greedy_order(ga.rev_depth.astype(float), ga, stages),
        live_order(scores, ga, stages),
        live_order(np.zeros(ga.n), ga, stages),
    ]
    return variants + [greedy_order(scores + rng.gumbel(size=ga.n), ga, stages) for _ in range(gumbel_variants)]


def _new_orders(order: np.ndarray, variants: list[np.ndarray]) -> list[np.ndarray]:
    """The distinct ``variants`` other than ``order``, first occurrence first."""
    seen, uniq = {order.tobytes()}, []
    for v in variants:
        if v.tobytes() not in seen:
            seen.add(v.tobytes())
            uniq.append(v)
    return uniq


def _best_variant(
    ga: GraphArrays, orders: list[np.ndarray], num_stages: int, key: tuple[float, float], cuts: list[int]
) -> _Found | None:
    """The best split of any of ``orders`` (each as on its whole matrices, from the rows near the period in
    ``key``; hint: ``cuts``), judged as the written segments are costed; None when none has a valid split."""
    if not orders:
        return None
    try:
        rcs = [bounded_range_costs(ga, v, num_stages, key[0], cuts) for v in orders]
        best, new_cuts, _, _ = best_split(rcs, num_stages)
    except ValueError:
        return None  # no variant has a valid split
    # the ranges of an order cost its ops in that sequence; the written segments in execution order
    new_key = map_period_s(ga, np.asarray(split_order(orders[best].tolist(), new_cuts, ga.n)), num_stages)
    return orders[best], new_cuts, new_key
