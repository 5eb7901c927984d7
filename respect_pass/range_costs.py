"""Stage costs of every contiguous range of a topological order, as numpy matrices.

For an order of n ops, ``T[a, b]`` is the cost-model time (seconds) of a
non-last stage made of ``order[a:b]`` and ``T_last[a]`` that of the last stage
``order[a:]``. Each term of :func:`hardware.stage_cost` becomes a matrix built
in O(n^2) numpy work with difference arrays and cumulative sums:

* compute and per-op overhead: prefix sums;
* parameter bytes: a buffer read at position p counts for the ranges
  starting after the previous reader of that buffer, ``a in (prev, p]``;
* input bytes: a tensor read at position r counts once for ranges that start
  after both its producer and its previous reader, ``a in (max(q, prev), r]``;
* output bytes: a tensor produced at q whose last reader is at L leaves every
  range with ``a <= q < b <= L``; the last stage outputs the model outputs.

Ranges a pipeline cannot run are infinite: a non-last range holding an op that
produces a model output, and a first range not reading every model input.
These matrices are what the ``dp`` scheduler minimises over; they equal
``stage_cost`` on the corresponding segment (tested).
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from tflite_io import OpGraph, StageMapError
from tflite_io.graph import distinct_constants

from hardware import EdgeTpuSpec, op_seconds

__all__ = ["RangeCosts", "range_costs", "range_sum", "empty_ranges"]


@dataclass(frozen=True)
class RangeCosts:
    """Per-range stage times and parameter bytes of one order (``inf`` where a range is not runnable)."""

    order: tuple[int, ...]
    time: np.ndarray        # (n+1, n+1): T[a, b] for a non-last stage order[a:b], a < b
    time_last: np.ndarray   # (n+1,): T_last[a] for the last stage order[a:]
    params: np.ndarray      # (n+1, n+1): parameter bytes of order[a:b]
    crossings: np.ndarray   # (n+1,): activation tensors crossing a cut before position b
    max_end: int            # a non-last stage must end at b <= max_end (before the first op pinned last)
    min_first_end: int      # the first stage must end at b >= min_first_end (every model input, ops pinned first)


@lru_cache(maxsize=8)
def empty_ranges(size: int) -> np.ndarray:
    """Boolean mask of the lower triangle with the diagonal (ranges a >= b, which are empty); shared, read-only."""
    mask = np.tri(size, dtype=bool)
    mask.flags.writeable = False
    return mask


def range_sum(n: int, starts: np.ndarray, stops: np.ndarray, cols: np.ndarray, values: np.ndarray) -> np.ndarray:
    """M[a, b] = sum of the values whose a-interval [start, stop) contains a and whose column is < b."""
    w = n + 1
    idx = np.concatenate([starts * w + cols + 1, stops * w + cols + 1])
    diff = np.bincount(idx, weights=np.concatenate([values, -values]), minlength=(n + 2) * w).reshape(n + 2, w)
    np.cumsum(diff, axis=0, out=diff)  # in place: half the time of allocating cumsums
    out = diff[:w]
    np.cumsum(out, axis=1, out=out)
    return out


def range_costs(graph: OpGraph, order: Sequence[int], spec: EdgeTpuSpec) -> RangeCosts:
    """The range cost matrices of ``order`` (a topological order of ``graph``)."""
    n = graph.num_ops
    order = tuple(order)
    if sorted(order) != list(range(n)):
        raise StageMapError(f"order must list each of the {n} ops once", 0)
    pos = np.empty(n, dtype=np.int64)
    pos[list(order)] = np.arange(n)
    ops = [graph.ops[v] for v in order]
    cum = np.concatenate([[0.0], np.cumsum(op_seconds(graph, spec)[list(order)])])

    # parameter bytes
    p_start, p_stop, p_col, p_val = [], [], [], []
    last_seen: dict[int, int] = {}
    for p, op in enumerate(ops):
        for buf, t in distinct_constants(graph.tensors, op.inputs).items():
            p_start.append(last_seen.get(buf, -1) + 1)
            p_stop.append(p + 1)
            p_col.append(p)
            p_val.append(float(t.nbytes))
            last_seen[buf] = p
    params = range_sum(n, *map(np.array, (p_start, p_stop, p_col)), np.array(p_val)) if p_val else np.zeros((n + 1, n + 1))

    # activation bytes entering (inputs) and leaving (outputs) each range, as one range_sum
    i_start, i_stop, i_col, i_val = [], [], [], []
    cross_diff = np.zeros(n + 2)
    for t, readers in graph.consumers.items():
        if t in graph.producer:
            q = int(pos[graph.producer[t]])
        elif t in graph.inputs:
            q = -1
        else:
            continue
        nbytes = float(graph.tensors[t].nbytes)
        prev = q
        rs = sorted(int(pos[c]) for c in readers)
        for r in rs:
            i_start.append(max(prev, q) + 1)
            i_stop.append(r + 1)
            i_col.append(r)
            i_val.append(nbytes)
            prev = r
        if q >= 0:  # leaves ranges [a, b) with a <= q < b <= last reader: rows [0, q], columns (q, last]
            last = rs[-1]
            i_start += [0, 0]
            i_stop += [q + 1, q + 1]
            i_col += [q, last]
            i_val += [nbytes, -nbytes]
            cross_diff[q + 1] += 1
            cross_diff[last + 1] -= 1
    io = range_sum(n, *map(np.array, (i_start, i_stop, i_col)), np.array(i_val)) if i_val else np.zeros((n + 1, n + 1))
    crossings = np.cumsum(cross_diff)[: n + 1]

    stream = params - spec.cache_bytes
    np.maximum(stream, 0.0, out=stream)
    stream *= 1.0 / spec.stream_bytes_per_s
    time = np.subtract.outer(-cum, -cum)  # cum[b] - cum[a]
    time += spec.t_invoke_s
    time += stream
    out_bytes = float(sum(graph.tensors[t].nbytes for t in graph.outputs))
    # the last stage's outputs are the model outputs; no produced tensor leaves the range [a, n)
    time_last = time[:, n] + (io[:, n] + out_bytes) / spec.io_bytes_per_s
    io *= 1.0 / spec.io_bytes_per_s
    time += io

    out_pos = [int(pos[v]) for v in graph.last_stage_ops]
    max_end = min(out_pos) if out_pos else n - 1
    first_reads = [min(int(pos[c]) for c in graph.consumers.get(t, ())) for t in graph.inputs if graph.consumers.get(t)]
    first_reads += [int(pos[v]) for v in graph.first_stage_ops]
    min_first_end = max(first_reads, default=0) + 1
    time[empty_ranges(n + 1)] = np.inf
    time[:, max_end + 1:] = np.inf
    time_last = np.where(np.arange(n + 1) <= max_end, time_last, np.inf)
    time_last[n] = np.inf
    return RangeCosts(order, time, time_last, params, crossings, max_end, min_first_end)
