"""The ``dp`` scheduler: the optimal contiguous K-split of one topological order.

With the range cost matrices of :func:`hardware.kernel.range_costs`, the best
split for the bottleneck objective is the min-max dynamic program

    f_1(b) = T[0, b],   f_k(b) = min_{a<b} max(f_{k-1}(a), T[a, b]),
    best = min_a max(f_{K-1}(a), T_last[a]),

each step one vectorised (n+1)x(n+1) numpy operation, O(n^2 K) in all. Ties
are broken by latency: a second pass minimises the sum of stage times over
the ranges that fit under the optimal bottleneck. Stage 0 must read every
model input and the last stage must hold every model-output op; every stage
gets at least one op.

The ``memory`` objective (alpha * max stage parameter bytes + tensors crossing
the cuts) is solved exactly too: for a parameter cap, the fewest crossings is
a shortest-path DP over the ranges under the cap; the smallest feasible cap is
a min-max DP on parameter bytes, and from there each larger cap that lowers
the crossings is found by bisection over the distinct range parameter sizes.
"""

from __future__ import annotations

import time
from collections.abc import Sequence

import numpy as np

from hardware import EdgeTpuSpec, as_spec
from hardware.kernel import CostArrays, RangeCosts, cost_arrays, map_period_s, range_costs
from hardware.terms import period_seconds, shared_link_per_byte, shared_link_seconds
from tflite_io import OpGraph, StageMapError

from ..objectives import DEFAULT_ALPHA, check_objective
from ..orders import split_order
from ..plan import REL_TOL, Plan, PlanStats

__all__ = ["dp_schedule", "best_cuts", "cuts_under", "capped", "min_crossing_cuts", "range_dp"]

#: How far below the floor (a lower bound of the period) a stage-time cap may be and still be tried: float
#: noise only, far below :data:`REL_TOL` (a cap that close to the floor is the floor).
_FLOOR_SLACK = 1e-12


def _check_feasible(rc: RangeCosts, num_stages: int) -> None:
    n = len(rc.order)
    if num_stages > 1 and rc.min_first_end + num_stages - 2 > rc.max_end:
        raise StageMapError(
            f"no {num_stages}-stage contiguous split of this order: the first stage needs the first "
            f"{rc.min_first_end} ops (model inputs), non-last stages must end by op {rc.max_end} of {n} "
            "(the first model output)",
            num_stages,
        )


def range_dp(
    cost: np.ndarray,
    last: np.ndarray,
    num_stages: int,
    first_end: int,
    combine=np.maximum,
    want_cuts: bool = True,
    rows: np.ndarray | None = None,
) -> tuple[float, list[int]]:
    """Generic K-stage DP over ranges: ``combine`` is max (bottleneck) or add (sums); returns the value and
    the cuts (none with ``want_cuts=False``, which skips the back-pointers). ``rows`` (sorted, with 0) are the
    only range starts whose costs are finite (:attr:`RangeCosts.rows`): the DP reads only those rows, with
    the same result."""
    n1 = cost.shape[0]
    f = np.full(n1, np.inf)
    f[first_end:] = cost[0, first_end:]
    back = []
    cols = np.arange(n1)
    starts = np.arange(n1) if rows is None else rows
    sub = cost if rows is None else cost[rows]
    buf = np.empty_like(sub)
    for _ in range(num_stages - 2):
        combine(f[starts, None], sub, out=buf)
        if want_cuts:
            arg = np.argmin(buf, axis=0)
            back.append(starts[arg])
            f = buf[arg, cols]
        else:
            f = buf.min(axis=0)
    final = combine(f, last)
    a = int(np.argmin(final))
    value = float(final[a])
    if not (want_cuts and np.isfinite(value)):
        return value, []
    cuts = [a]
    for arg in reversed(back):
        a = int(arg[a])
        cuts.append(a)
    return value, sorted(cuts)


def capped(rc: RangeCosts, bottleneck: float) -> tuple[np.ndarray, np.ndarray]:
    """``rc.time`` and ``rc.time_last`` with every range slower than ``bottleneck`` (:data:`REL_TOL` slack)
    set to inf."""
    cap = bottleneck * (1 + REL_TOL)
    return np.where(rc.time <= cap, rc.time, np.inf), np.where(rc.time_last <= cap, rc.time_last, np.inf)


def cuts_under(rc: RangeCosts, num_stages: int, bottleneck: float) -> tuple[list[int], float]:
    """Cuts of the least-latency split of ``rc.order`` whose stages all take at most ``bottleneck``, and
    that latency (s): the second pass of :func:`best_cuts`."""
    if num_stages == 1:
        return [], float(rc.time_last[0])
    latency, cuts = range_dp(*capped(rc, bottleneck), num_stages, rc.min_first_end, combine=np.add, rows=rc.rows)
    return cuts, latency


def best_cuts(rc: RangeCosts, num_stages: int, spec: EdgeTpuSpec | None = None) -> tuple[list[int], float, float]:
    """Cut positions of the best split of ``rc.order`` for (period, latency); and those two values (s).

    The period is :func:`hardware.terms.period_seconds`: the slowest stage and, where ``spec``'s TPUs share
    one host controller, at least the time it needs for the host-link bytes of all stages (``None``: the
    slowest stage alone). Where that bound binds, the best split is found by bisection over the stage-time
    caps v: the split with the fewest link bytes among those with every stage <= v.
    """
    _check_feasible(rc, num_stages)
    shared = spec is not None and shared_link_per_byte(spec) > 0
    if num_stages == 1:
        t = float(rc.time_last[0])
        return [], period_seconds(spec, [t], float(_links(rc)[1][0])) if spec is not None else t, t
    bottleneck, _ = range_dp(rc.time, rc.time_last, num_stages, rc.min_first_end, want_cuts=False)
    cuts, latency = cuts_under(rc, num_stages, bottleneck)
    if spec is None or not shared or shared_link_seconds(spec, _link_bytes(rc, cuts)) <= bottleneck:
        return cuts, bottleneck, latency
    return _shared_link_cuts(rc, num_stages, spec, bottleneck)


def _links(rc: RangeCosts) -> tuple[np.ndarray, np.ndarray]:
    """The host-link bytes of every range (activations and streamed parameters), non-last and last."""
    if rc.link is None or rc.link_last is None:
        raise ValueError("the shared host link needs the whole range matrices, not some rows")
    return rc.link, rc.link_last


def _link_bytes(rc: RangeCosts, cuts: list[int]) -> float:
    """Bytes the split ``cuts`` of ``rc.order`` moves over the host link per request."""
    link, link_last = _links(rc)
    b = [0, *cuts]
    return float(sum(link[b[i], b[i + 1]] for i in range(len(b) - 1)) + link_last[b[-1]])


def _shared_link_cuts(rc: RangeCosts, num_stages: int, spec: EdgeTpuSpec, floor: float) -> tuple[list[int], float, float]:
    """min over splits of the period (slowest stage or shared link), by bisection on the stage cap."""
    caps = np.unique(np.concatenate([rc.time[np.isfinite(rc.time)], rc.time_last[np.isfinite(rc.time_last)]]))
    caps = caps[caps >= floor * (1 - _FLOOR_SLACK)]

    def fewest_bytes(cap: float) -> tuple[float, list[int]]:
        t, t_last = capped(rc, cap)
        link, link_last = _links(rc)
        return range_dp(
            np.where(np.isfinite(t), link, np.inf),
            np.where(np.isfinite(t_last), link_last, np.inf),
            num_stages,
            rc.min_first_end,
            combine=np.add,
        )

    lo, hi = 0, len(caps) - 1  # the smallest cap whose fewest link bytes fit under it
    while lo < hi:
        mid = (lo + hi) // 2
        if shared_link_seconds(spec, fewest_bytes(caps[mid])[0]) <= caps[mid]:
            hi = mid
        else:
            lo = mid + 1
    options = [fewest_bytes(caps[lo])[1]] + ([fewest_bytes(caps[lo - 1])[1]] if lo > 0 else [])
    best: tuple[float, float, list[int]] | None = None
    for cuts in options:
        b = [0, *cuts, len(rc.order)]
        times = [rc.time[b[i], b[i + 1]] for i in range(num_stages - 1)] + [rc.time_last[b[-2]]]
        key = (period_seconds(spec, times, _link_bytes(rc, cuts)), float(sum(times)))
        if best is None or key < best[:2]:
            best = (*key, cuts)
    assert best is not None
    return best[2], best[0], best[1]


def min_crossing_cuts(rc: RangeCosts, num_stages: int, cap: float) -> tuple[float, list[int]]:
    """Fewest crossing tensors over K-1 cuts with every stage's parameter bytes <= ``cap``."""
    ok = rc.params <= cap
    cost = np.where(ok & np.isfinite(rc.time), rc.crossings[None, :], np.inf)
    last = np.where(ok[:, -1] & np.isfinite(rc.time_last), 0.0, np.inf)
    return range_dp(cost, last, num_stages, rc.min_first_end, combine=np.add)


def _memory_cuts(rc: RangeCosts, num_stages: int, alpha: float) -> tuple[list[int], float]:
    n = len(rc.order)
    last_ok = np.isfinite(rc.time_last)
    min_cap, _ = range_dp(
        np.where(np.isfinite(rc.time), rc.params, np.inf),
        np.where(last_ok, rc.params[:, n], np.inf),
        num_stages,
        rc.min_first_end,
    )
    values = np.unique(np.concatenate([rc.params[np.isfinite(rc.time)], rc.params[last_ok, n]]))
    values = values[values >= min_cap - 0.5]
    cross, cuts = min_crossing_cuts(rc, num_stages, values[0])
    best = (alpha * values[0] + cross, cuts)
    floor, _ = min_crossing_cuts(rc, num_stages, np.inf)
    i = 0
    while cross > floor:
        lo, hi = i + 1, len(values) - 1  # smallest cap with fewer crossings
        while lo < hi:
            mid = (lo + hi) // 2
            if min_crossing_cuts(rc, num_stages, values[mid])[0] < cross:
                hi = mid
            else:
                lo = mid + 1
        if alpha * values[lo] + floor >= best[0]:
            break
        i = lo
        cross, cuts = min_crossing_cuts(rc, num_stages, values[i])
        if alpha * values[i] + cross < best[0]:
            best = (alpha * values[i] + cross, cuts)
    return best[1], best[0]


def dp_schedule(
    graph: OpGraph,
    num_stages: int,
    cost: EdgeTpuSpec | None = None,
    *,
    objective: str = "latency",
    alpha: float = DEFAULT_ALPHA,
    order: Sequence[int] | None = None,
    arrays: CostArrays | None = None,
    ranges: RangeCosts | None = None,
) -> Plan:
    """Optimal contiguous split of ``order`` (default: the model's execution order) into ``num_stages``
    (``arrays``: the graph's :func:`~hardware.kernel.cost_arrays` under ``cost``, and ``ranges`` the
    :func:`~hardware.kernel.range_costs` of ``order`` under them, when the caller has them)."""
    t0 = time.perf_counter()
    check_objective(objective)
    spec = as_spec(cost)
    order = tuple(range(graph.num_ops)) if order is None else tuple(order)
    ca = arrays if arrays is not None else cost_arrays(graph, spec)
    if ranges is not None and ranges.order != order:
        raise ValueError("dp_schedule: ranges were computed for another order")
    rc = ranges if ranges is not None else range_costs(ca, order)
    if objective == "latency":
        cuts, bottleneck, latency = best_cuts(rc, num_stages, spec)
        # reported as the device model costs the written segments (ops in execution order within each)
        bottleneck, latency = map_period_s(ca, np.asarray(split_order(order, cuts, graph.num_ops)), num_stages)
        stats = PlanStats(bottleneck_ms=float(bottleneck) * 1e3, latency_ms=float(latency) * 1e3)
    else:
        _check_feasible(rc, num_stages)
        cuts, value = _memory_cuts(rc, num_stages, alpha) if num_stages > 1 else ([], alpha * float(rc.params[0, -1]))
        stats = PlanStats(objective_value=float(value))
    if num_stages > 1 and len(cuts) != num_stages - 1:
        raise StageMapError(f"no valid {num_stages}-stage split of this order", num_stages)
    stages = split_order(order, cuts, graph.num_ops)
    return Plan(stages, num_stages, "dp", objective=objective, solve_seconds=time.perf_counter() - t0, stats=stats)
