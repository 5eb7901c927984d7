"""Fast ``dp`` splitting of many candidate orders of one graph.

The range cost matrices of each candidate order come from the device model's kernel,
:func:`hardware.kernel.range_costs` (no Python loop over ops or tensors, so a new order
costs a few milliseconds even on a 510-op graph).
:func:`split_values` runs the bottleneck dynamic program of
:func:`respect_pass.schedulers.dp.best_cuts` on every candidate (values only,
in place into one buffer) and the latency tie-break only where bottlenecks
tie; :func:`best_split` picks the lexicographically best candidate and
recovers its cuts with the latency pass of ``best_cuts`` (:func:`cuts_under`),
so the final split is what the ``dp`` scheduler returns for that order (tested).
:func:`written_splits` splits candidates one at a time and costs each split as
its segments are written; :func:`pick_written` ranks them (:func:`best_written_split`: both).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import NamedTuple

import numpy as np

from hardware.kernel import (
    CostArrays,
    OrderTerms,
    RangeCosts,
    cover_lower_bounds,
    map_period_s,
    order_terms,
    partial_range_costs,
    range_costs,
    range_rows,
    whole_range_costs,
)

from ..orders import split_order
from ..plan import REL_TOL
from .dp import capped, cuts_under, range_dp

__all__ = [
    "cuts_under",
    "bottleneck_value",
    "latency_value",
    "split_values",
    "best_split",
    "Written",
    "written_split",
    "written_splits",
    "pick_written",
    "best_written_split",
    "feasible",
    "bounded_range_costs",
    "uses_rows",
]

#: :func:`bounded_range_costs` takes the whole matrices on graphs of fewer ops (where they cost less than the
#: passes over rows) and for more stages (the splits reach most rows: on the 200+-op zoo models, 1.0-1.2x
#: respect's time at K = 6..8 against 0.4-0.8x at K = 2..4 and 0.65-1.0x at K = 5);
BOUNDED_MIN_OPS = 200
BOUNDED_MAX_STAGES = 5
#: at once where the bounds alone leave more than this share of the rows open as stage starts;
MAX_OPEN_SHARE = 0.8
#: once the rows it needs pass this share of them;
MAX_ROW_SHARE = 0.4
#: or after this many passes (each keeps the rows of the last).
BOUND_TRIES = 3
#: Where no split is found under the bound, the next pass raises it by this factor.
BOUND_STEP = 1.02
#: The cap on a stage's time is the bound plus this share (ranges exactly at the bound stay in).
_CAP_SLACK = 1e-6


def feasible(rc: RangeCosts, num_stages: int) -> bool:
    """Whether ``rc.order`` has any valid contiguous ``num_stages``-split."""
    return num_stages <= 1 or rc.min_first_end + num_stages - 2 <= rc.max_end


def bottleneck_value(rc: RangeCosts, num_stages: int) -> float:
    """Bottleneck (s) of the best ``num_stages``-split of ``rc.order``; inf if it has none."""
    if not feasible(rc, num_stages):
        return np.inf
    if num_stages == 1:
        return float(rc.time_last[0])
    return range_dp(rc.time, rc.time_last, num_stages, rc.min_first_end, want_cuts=False, rows=rc.rows)[0]


def latency_value(rc: RangeCosts, num_stages: int, bottleneck: float) -> float:
    """Least latency (s) of a ``num_stages``-split of ``rc.order`` whose bottleneck is within :data:`REL_TOL` of
    ``bottleneck``."""
    if not np.isfinite(bottleneck):
        return np.inf
    if num_stages == 1:
        return float(rc.time_last[0])
    return range_dp(*capped(rc, bottleneck), num_stages, rc.min_first_end, combine=np.add, want_cuts=False, rows=rc.rows)[0]


def split_values(
    rcs: Sequence[RangeCosts], num_stages: int, max_tied: int = 4, known: Sequence[float] = ()
) -> tuple[np.ndarray, np.ndarray]:
    """(bottleneck, latency) in seconds of each candidate's best split; the latency only for the first
    ``max_tied`` candidates whose bottleneck ties the smallest (inf elsewhere, and wherever no split exists).
    ``known`` gives the bottlenecks of the first candidates when the caller has them already."""
    bott = np.array(
        [known[i] if i < len(known) else bottleneck_value(rc, num_stages) for i, rc in enumerate(rcs)], dtype=np.float64
    )
    lat = np.full(len(rcs), np.inf)
    if len(rcs) and np.isfinite(bott).any():
        tied = np.flatnonzero(bott <= bott.min() * (1 + REL_TOL))[:max_tied]
        if len(tied) == 1:
            return bott, lat
        for i in tied:
            lat[i] = latency_value(rcs[i], num_stages, float(bott[i]))
    return bott, lat


def best_split(
    rcs: Sequence[RangeCosts], num_stages: int, max_tied: int = 4, known: Sequence[float] = ()
) -> tuple[int, list[int], float, float]:
    """Index of the best candidate by (bottleneck, latency), its cuts and both values (s).

    Bottlenecks within a relative :data:`REL_TOL` count as equal; the latency breaks ties among the first ``max_tied``
    tied candidates (earlier candidates win the rest). Raises ValueError if no candidate can be split.
    """
    if len(rcs) == 1:
        best = 0
    else:
        bott, lat = split_values(rcs, num_stages, max_tied, known)
        if not np.isfinite(bott).any():
            raise ValueError(f"no candidate order has a valid {num_stages}-stage split")
        tied = bott <= bott.min() * (1 + REL_TOL)
        best = int(np.argmin(np.where(tied, lat, np.inf))) if np.isfinite(lat).any() else int(np.argmin(bott))
    b = float(bott[best]) if len(rcs) > 1 else (float(known[0]) if known else bottleneck_value(rcs[0], num_stages))
    if not np.isfinite(b):
        raise ValueError(f"no candidate order has a valid {num_stages}-stage split")
    cuts, lt = cuts_under(rcs[best], num_stages, b)
    return best, cuts, b, lt


class Written(NamedTuple):
    """One candidate order's ``dp`` split: its index among the candidates, range bottleneck (s), cuts, and
    (period, latency) in s as its segments are written (:func:`hardware.kernel.map_period_s`)."""

    candidate: int
    bottleneck: float
    cuts: list[int]
    key: tuple[float, float]


def written_split(
    ca: CostArrays, rc: RangeCosts, num_stages: int, candidate: int, bottleneck: float | None = None
) -> Written | None:
    """The :class:`Written` split of one candidate order, split with :func:`cuts_under` at its range bottleneck
    (``bottleneck`` when the caller has it); None if the order has no split."""
    b = bottleneck_value(rc, num_stages) if bottleneck is None else bottleneck
    if not np.isfinite(b):
        return None
    cuts, _ = cuts_under(rc, num_stages, float(b))
    return Written(candidate, float(b), cuts, map_period_s(ca, np.asarray(split_order(rc.order, cuts, ca.n)), num_stages))


def written_splits(
    ca: CostArrays, rcs: Iterable[RangeCosts], num_stages: int, known: Sequence[float] = (), start: int = 0
) -> list[Written]:
    """:func:`written_split` of every candidate that has a split (indices from ``start``; ``known`` gives the first
    bottlenecks when the caller has them). ``rcs`` is consumed one at a time, so a generator keeps one candidate's
    matrices alive, not all of them."""
    found = (
        written_split(ca, rc, num_stages, i, known[i - start] if i - start < len(known) else None)
        for i, rc in enumerate(rcs, start)
    )
    return [w for w in found if w is not None]


def pick_written(entries: Sequence[Written], top: int | None = None) -> list[tuple[int, list[int], float, float]]:
    """(index, cuts, period s, latency s) of the best written (period, latency) among the ``top`` (default: all)
    lowest range bottlenecks, then of the best range bottleneck if that is another candidate; ties go to the lower
    range bottleneck, then the lower index. Raises ValueError if there is no entry.

    The range costs of an order cache a stage's layers in the order's sequence; where stages stream, the
    written plan can differ, so the best range bottleneck is not always the best plan."""
    if not entries:
        raise ValueError("no candidate order has a valid split")
    ranked = sorted(entries, key=lambda e: (e.bottleneck, e.candidate))[: max(len(entries) if top is None else top, 1)]
    picks = [min(ranked, key=lambda e: e.key)]
    if picks[0].candidate != ranked[0].candidate:
        picks.append(ranked[0])
    return [(e.candidate, e.cuts, e.key[0], e.key[1]) for e in picks]


def best_written_split(
    ca: CostArrays, rcs: Iterable[RangeCosts], num_stages: int, top: int | None = None, known: Sequence[float] = ()
) -> list[tuple[int, list[int], float, float]]:
    """:func:`pick_written` of :func:`written_splits`: the best candidate as written among the ``top`` lowest range
    bottlenecks, then the range winner if that is another. Raises ValueError if no candidate can be split."""
    return pick_written(written_splits(ca, rcs, num_stages, known), top)


def uses_rows(num_ops: int, num_stages: int) -> bool:
    """Whether :func:`bounded_range_costs` may split a graph of ``num_ops`` ops into ``num_stages`` from rows."""
    return 2 <= num_stages <= BOUNDED_MAX_STAGES and num_ops >= BOUNDED_MIN_OPS


def bounded_range_costs(
    ca: CostArrays, order: np.ndarray, num_stages: int, bound: float, hint: Sequence[int] = ()
) -> RangeCosts:
    """Range costs of ``order`` that give the same ``dp`` split as :func:`hardware.kernel.range_costs` (same
    bottleneck and cuts, bit for bit), computed on the rows (range starts) that splits with a bottleneck
    near ``bound`` can use: a tenth to a third of the matrices for K = 2..5 when ``bound`` is close.

    Stage by stage, the rows kept are the stage starts the min-max DP reaches within the cap (``bound`` plus
    :data:`_CAP_SLACK`) from which the rest of the order can still be covered within it
    (:func:`hardware.kernel.cover_lower_bounds`). Every range of every split whose stages all fit under the
    cap then starts at a kept row, so if the order's bottleneck on those rows is at most ``bound``, the DP
    and its latency tie-break (whose ranges fit under that bottleneck) see exactly what they would on the
    whole matrices. Otherwise the order's bottleneck is at most the one found on those rows, and one more
    pass with that as the bound is exact. The cuts ``hint`` (another order's, say) are kept from the start
    so that some split is always found; where none is, the bound grows by :data:`BOUND_STEP`. Once the rows
    would pass :data:`MAX_ROW_SHARE`, or after :data:`BOUND_TRIES` passes, the whole matrices are computed;
    at once where the bounds alone leave more than :data:`MAX_OPEN_SHARE` of the rows open (on NASNet-like
    cells at K >= 3, say), and on the graphs and K of :data:`BOUNDED_MIN_OPS`."""
    n1, K = ca.n + 1, num_stages
    if not (uses_rows(ca.n, K) and np.isfinite(bound)):
        return range_costs(ca, order)
    terms = order_terms(ca, order)
    head, lb = cover_lower_bounds(ca, terms, K)
    cap = bound * (1 + _CAP_SLACK)
    stages = np.arange(1, K)[:, None]
    if ((head[1:K] <= stages * cap) & (lb[K - 1 : 0 : -1] <= (K - stages) * cap)).any(axis=0).sum() > MAX_OPEN_SHARE * n1:
        return whole_range_costs(ca, terms)
    rows = _Rows(ca, terms)
    first = np.zeros(n1, dtype=bool)
    first[[0, *(c for c in hint if 0 < c < n1)]] = True
    if not rows.need(first):
        return whole_range_costs(ca, terms)
    for _ in range(BOUND_TRIES):
        if not _reach(rows, lb, K, bound * (1 + _CAP_SLACK)):
            return whole_range_costs(ca, terms)
        rc = partial_range_costs(ca, terms, rows.time, rows.last, np.flatnonzero(rows.done))
        found = bottleneck_value(rc, K)
        if found <= bound:
            return rc
        bound = found if np.isfinite(found) else bound * BOUND_STEP
    return whole_range_costs(ca, terms)


class _Rows:
    """The rows of one order's range matrices computed so far (``done``), inf in the others."""

    def __init__(self, ca: CostArrays, terms: OrderTerms) -> None:
        n1 = ca.n + 1
        self.ca, self.terms = ca, terms
        self.time, self.last = np.full((n1, n1), np.inf), np.full(n1, np.inf)
        self.done = np.zeros(n1, dtype=bool)

    def need(self, rows: np.ndarray) -> bool:
        """Compute the ``rows`` (a mask) not yet done; False once the rows done pass :data:`MAX_ROW_SHARE`."""
        new = np.flatnonzero(rows & ~self.done)
        if len(new):
            self.done[new] = True
            if self.done.sum() > MAX_ROW_SHARE * len(self.done):
                return False
            rr = range_rows(self.ca, self.terms, new)
            self.time[new], self.last[new] = rr.time, rr.time_last
        return True


def _reach(rows: _Rows, lb: np.ndarray, num_stages: int, cap: float) -> bool:
    """Compute, stage by stage, every stage start the min-max DP reaches within ``cap`` from which the rest
    of the order can still be covered within it (``lb``: :func:`cover_lower_bounds`' tails); False when
    the rows pass :data:`MAX_ROW_SHARE` (the caller then takes the whole matrices)."""
    K, n1 = num_stages, len(rows.done)
    fits = lb <= np.arange(K + 1)[:, None] * cap * (1 + REL_TOL)  # fits[m, a]: m stages may cover order[a:]
    f = np.full(n1, np.inf)
    f[rows.terms.min_first_end :] = rows.time[0, rows.terms.min_first_end :]
    for stage in range(1, K - 1):
        starts = (f <= cap) & fits[K - stage]
        if not rows.need(starts):
            return False
        idx = np.flatnonzero(starts)
        f = np.maximum(f[idx, None], rows.time[idx]).min(axis=0) if len(idx) else np.full(n1, np.inf)
    return rows.need((f <= cap) & fits[1])
