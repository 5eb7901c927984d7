"""Fast ``dp`` splitting of many candidate orders of one graph.

:func:`order_range_costs` builds the same :class:`~respect_pass.range_costs.RangeCosts`
matrices as :func:`respect_pass.range_costs.range_costs`, but from the
precomputed index arrays of :class:`~respect_pass.policy.features.GraphArrays`
with no Python loop over ops or tensors (sorting and ``bincount`` instead), so
a new order costs a few milliseconds even on a 510-op graph.
:func:`split_values` runs the bottleneck dynamic program of
:func:`respect_pass.schedulers.dp.best_cuts` on every candidate (values only,
in place into one buffer) and the latency tie-break only where bottlenecks
tie; :func:`best_split` picks the lexicographically best candidate and
recovers its cuts with the latency pass of ``best_cuts`` (:func:`cuts_under`),
so the final split is what the ``dp`` scheduler returns for that order (tested).
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from respect_pass.range_costs import RangeCosts, empty_ranges, range_sum
from respect_pass.schedulers.dp import capped, cuts_under, range_dp

from .features import GraphArrays

__all__ = ["order_range_costs", "cuts_under", "bottleneck_value", "latency_value", "split_values", "best_split", "feasible"]

_REL = 1e-9


def _prev_in_group(groups: np.ndarray, positions: np.ndarray, first: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Sort pairs by (group, position); return the sort key and each pair's previous position in its group
    (``first[i]`` for the first pair of a group)."""
    key = np.lexsort((positions, groups))
    g, p = groups[key], positions[key]
    prev = np.empty_like(p)
    if len(p):
        prev[1:] = p[:-1]
        new = np.ones(len(p), dtype=bool)
        new[1:] = g[1:] != g[:-1]
        prev[new] = first[key][new]
    return key, prev


def order_range_costs(ga: GraphArrays, order: Sequence[int] | np.ndarray) -> RangeCosts:
    """The range cost matrices of ``order`` (a topological order), equal to ``range_costs(graph, order, spec)``."""
    n, spec = ga.n, ga.spec
    order = np.asarray(order, dtype=np.int64)
    pos = np.empty(n, dtype=np.int64)
    pos[order] = np.arange(n)
    cum = np.concatenate([[0.0], np.cumsum(ga.compute_s[order])])

    if len(ga.pb_op):
        p = pos[ga.pb_op]
        key, prev = _prev_in_group(ga.pb_buf, p, np.full(len(p), -1, dtype=np.int64))
        ps = p[key]
        params = range_sum(n, prev + 1, ps + 1, ps, ga.pb_bytes[key])
    else:
        params = np.zeros((n + 1, n + 1))

    # activation bytes entering (ins) and leaving (outs) each range, summed into one difference array:
    # outs = reverse-cumsum over a of cumsum over b of out_diff, rewritten as a forward cumsum over a.
    st, sp, cl, vl = [], [], [], []
    last = np.zeros(0, dtype=np.int64)
    if len(ga.in_reader):
        r = pos[ga.in_reader]
        q = np.where(ga.in_producer >= 0, pos[np.maximum(ga.in_producer, 0)], -1)
        key, prev = _prev_in_group(ga.in_tensor, r, q)
        rs = r[key]
        st.append(prev + 1), sp.append(rs + 1), cl.append(rs), vl.append(ga.in_bytes_pair[key])
        produced = ga.in_entry >= 0
        last = np.full(len(ga.out_producer), -1, dtype=np.int64)
        np.maximum.at(last, ga.in_entry[produced], r[produced])
    if len(last):
        qo = pos[ga.out_producer]
        keep = last < n  # a tensor read by the last op of the order leaves no range ending before n
        b_out = ga.out_bytes_t
        # +b on rows [0, q], columns [q+1, last+1): start 0, stop q+1, column q+1 minus column last+1
        st += [np.zeros_like(qo), np.zeros_like(qo[keep])]
        sp += [qo + 1, qo[keep] + 1]
        cl += [qo, last[keep]]
        vl += [b_out, -b_out[keep]]
        cross = np.bincount(np.concatenate([qo + 1, last + 1]),
                            weights=np.concatenate([np.ones(len(qo)), -np.ones(len(qo))]), minlength=n + 2)
    else:
        cross = np.zeros(n + 2)
    if st:
        io = range_sum(n, np.concatenate(st), np.concatenate(sp), np.concatenate(cl), np.concatenate(vl))
    else:
        io = np.zeros((n + 1, n + 1))
    crossings = np.cumsum(cross)[: n + 1]

    time = np.subtract.outer(-cum, -cum)  # cum[b] - cum[a]
    time += spec.t_invoke_s
    params_over = params - spec.cache_bytes
    np.maximum(params_over, 0.0, out=params_over)
    params_over *= 1.0 / spec.stream_bytes_per_s
    time += params_over
    io *= 1.0 / spec.io_bytes_per_s
    time += io
    # the last stage's outputs are the model outputs; no produced tensor leaves the range [a, n)
    time_last = time[:, n] + ga.model_out_bytes / spec.io_bytes_per_s

    max_end = int(pos[ga.output_ops].min()) if ga.output_ops.any() else n - 1
    first_reads = [int(pos[r].min()) for r in ga.input_readers]
    min_first_end = max(first_reads, default=0) + 1
    time[empty_ranges(n + 1)] = np.inf
    time[:, max_end + 1:] = np.inf
    time_last[max_end + 1:] = np.inf
    time_last[n] = np.inf
    return RangeCosts(tuple(int(v) for v in order), time, time_last, params, crossings, max_end, min_first_end)


def feasible(rc: RangeCosts, num_stages: int) -> bool:
    """Whether ``rc.order`` has any valid contiguous ``num_stages``-split."""
    return num_stages <= 1 or rc.min_first_end + num_stages - 2 <= rc.max_end


def bottleneck_value(rc: RangeCosts, num_stages: int) -> float:
    """Bottleneck (s) of the best ``num_stages``-split of ``rc.order``; inf if it has none."""
    if not feasible(rc, num_stages):
        return np.inf
    if num_stages == 1:
        return float(rc.time_last[0])
    return range_dp(rc.time, rc.time_last, num_stages, rc.min_first_end, want_cuts=False)[0]


def latency_value(rc: RangeCosts, num_stages: int, bottleneck: float) -> float:
    """Least latency (s) of a ``num_stages``-split of ``rc.order`` whose bottleneck is within 1e-9 of ``bottleneck``."""
    if not np.isfinite(bottleneck):
        return np.inf
    if num_stages == 1:
        return float(rc.time_last[0])
    return range_dp(*capped(rc, bottleneck), num_stages, rc.min_first_end, combine=np.add, want_cuts=False)[0]


def split_values(rcs: Sequence[RangeCosts], num_stages: int, max_tied: int = 4,
                 known: Sequence[float] = ()) -> tuple[np.ndarray, np.ndarray]:
    """(bottleneck, latency) in seconds of each candidate's best split; the latency only for the first
    ``max_tied`` candidates whose bottleneck ties the smallest (inf elsewhere, and wherever no split exists).
    ``known`` gives the bottlenecks of the first candidates when the caller has them already."""
    bott = np.array([known[i] if i < len(known) else bottleneck_value(rc, num_stages) for i, rc in enumerate(rcs)],
                    dtype=np.float64)
    lat = np.full(len(rcs), np.inf)
    if len(rcs) and np.isfinite(bott).any():
        tied = np.flatnonzero(bott <= bott.min() * (1 + _REL))[:max_tied]
        if len(tied) == 1:
            return bott, lat
        for i in tied:
            lat[i] = latency_value(rcs[i], num_stages, float(bott[i]))
    return bott, lat


def best_split(rcs: Sequence[RangeCosts], num_stages: int, max_tied: int = 4,
               known: Sequence[float] = ()) -> tuple[int, list[int], float, float]:
    """Index of the best candidate by (bottleneck, latency), its cuts and both values (s).

    Bottlenecks within a relative 1e-9 count as equal; the latency breaks ties among the first ``max_tied``
    tied candidates (earlier candidates win the rest). Raises ValueError if no candidate can be split.
    """
    if len(rcs) == 1:
        best = 0
    else:
        bott, lat = split_values(rcs, num_stages, max_tied, known)
        if not np.isfinite(bott).any():
            raise ValueError(f"no candidate order has a valid {num_stages}-stage split")
        tied = bott <= bott.min() * (1 + _REL)
        best = int(np.argmin(np.where(tied, lat, np.inf))) if np.isfinite(lat).any() else int(np.argmin(bott))
    b = float(bott[best]) if len(rcs) > 1 else (float(known[0]) if known else bottleneck_value(rcs[0], num_stages))
    if not np.isfinite(b):
        raise ValueError(f"no candidate order has a valid {num_stages}-stage split")
    cuts, lt = cuts_under(rcs[best], num_stages, b)
    return best, cuts, b, lt
