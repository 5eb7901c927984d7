"""The device model's vectorised kernel: stage times of every contiguous range of an order, and of
every stage of a stage map, as numpy arrays, from one precomputation per (graph, spec).

:func:`cost_arrays` flattens a graph into index arrays once: per-op time (:func:`hardware.cost.op_seconds`),
(constant buffer, reader) pairs with their bytes and stream tiles, (activation tensor, reader, producer)
pairs, the ops pinned to the last stage and the op sets of which stage 0 must hold one. From them:

* :func:`range_costs` (in :mod:`hardware.ranges`, re-exported here): ``T[a, b]``, the time of a non-last
  stage made of ``order[a:b]``, and ``T_last[a]``, that of the last stage ``order[a:]``, for every a < b, in
  O(n^2) numpy work; :func:`range_rows`: some rows of them, bit-identical, in O(rows * n);
  :func:`cover_lower_bounds`: bounds on the stages covering a head or tail of an order;
* :func:`map_stage_times`: the K stage times of a monotone stage map in O(n) (:func:`map_stage_times_many`:
  of many maps in one pass);
* :func:`lower_bound_s`: a bound no K-stage plan's bottleneck can beat.

Streaming is summed in tile-bytes (whole numbers, exact in float64) and turned into seconds once per stage,
as the reference does. Each equals :func:`hardware.cost.stage_cost`, the reference, on every split and map
(tests), and every scheduler, the policy's split, refinement and features, and the lower bound call these.
This module and :mod:`hardware.ranges` only aggregate (which ops, bytes and layers each stage or range
holds); every term's formula is :mod:`hardware.terms`'.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np

from tflite_io import OpGraph

from . import terms
from .cost import device_param_bytes, link_bytes, op_seconds, stream_tiles
from .ranges import (
    OrderTerms,
    RangeCosts,
    RowCosts,
    cover_lower_bounds,
    empty_ranges,
    order_terms,
    partial_range_costs,
    range_costs,
    range_rows,
    range_sum,
    whole_range_costs,
)
from .spec import EdgeTpuSpec

__all__ = [
    "CostArrays",
    "cost_arrays",
    "RangeCosts",
    "range_costs",
    "OrderTerms",
    "order_terms",
    "RowCosts",
    "range_rows",
    "whole_range_costs",
    "cover_lower_bounds",
    "partial_range_costs",
    "range_sum",
    "empty_ranges",
    "map_stage_times",
    "map_stage_times_many",
    "lower_bound_s",
]


@dataclass(frozen=True)
class CostArrays:
    """Index arrays of one graph under one spec (see the module docstring)."""

    n: int
    spec: EdgeTpuSpec
    op_s: np.ndarray  # (n,) per-op time, :func:`hardware.cost.op_seconds`
    param_bytes: np.ndarray  # (n,) distinct constant bytes of each op
    pb_buf: np.ndarray  # (buffer, reader op, device bytes, stream tiles) of every distinct constant read,
    pb_op: np.ndarray  # in execution order (:func:`hardware.cost.device_param_bytes`, ``stream_tiles``)
    pb_bytes: np.ndarray  # whole bytes and whole tiles: every sum of them, and of bytes * tiles, is exact
    pb_tiles: np.ndarray  # in float64 (any order gives the same bits; the range kernel relies on it)
    in_tensor: np.ndarray  # (tensor, reader op, producer op or -1, bytes) pairs: activations entering ops
    in_reader: np.ndarray
    in_producer: np.ndarray
    in_bytes_pair: np.ndarray
    in_entry: np.ndarray  # per pair: index into the out_* arrays of its tensor, -1 for a model input
    out_producer: np.ndarray  # (producer op, bytes) of every produced tensor that has readers
    out_bytes_t: np.ndarray
    model_out_bytes: float
    input_readers: tuple[np.ndarray, ...]  # op sets of which stage 0 must hold one (model inputs' readers, ops pinned first)
    last_ops: np.ndarray  # (n,) bool: pinned to the last stage (model-output producers, host-op tail)
    total_param_bytes: float
    host_s: float  # the host (CPU) ops' time per request, :func:`hardware.terms.host_bound_seconds`


def cost_arrays(graph: OpGraph, spec: EdgeTpuSpec) -> CostArrays:
    """Build the :class:`CostArrays` of ``graph`` under ``spec`` (linear in the graph's size)."""
    n = graph.num_ops
    pb_buf, pb_op, pb_bytes, pb_w = _param_pairs(graph, spec)
    param = np.zeros(n)
    np.add.at(param, np.asarray(pb_op, dtype=np.int64), np.asarray(pb_bytes, dtype=np.float64))
    (in_t, in_r, in_p, in_b, in_e), (out_p, out_b) = _activation_pairs(graph)
    consumers = graph.consumers
    input_readers = tuple(np.asarray(consumers[t], dtype=np.int64) for t in graph.inputs if consumers.get(t)) + tuple(
        np.asarray([v], dtype=np.int64) for v in sorted(graph.first_stage_ops)
    )
    last_ops = np.zeros(n, dtype=bool)
    last_ops[list(graph.last_stage_ops)] = True
    i64 = lambda x: np.asarray(x, dtype=np.int64)  # noqa: E731
    f64 = lambda x: np.asarray(x, dtype=np.float64)  # noqa: E731
    op_s = op_seconds(graph, spec)
    return CostArrays(
        n=n,
        spec=spec,
        op_s=op_s,
        param_bytes=param,
        pb_buf=i64(pb_buf),
        pb_op=i64(pb_op),
        pb_bytes=f64(pb_bytes),
        pb_tiles=f64(pb_w),
        in_tensor=i64(in_t),
        in_reader=i64(in_r),
        in_producer=i64(in_p),
        in_bytes_pair=f64(in_b),
        in_entry=i64(in_e),
        out_producer=i64(out_p),
        out_bytes_t=f64(out_b),
        model_out_bytes=float(sum(link_bytes(graph, t, False) for t in graph.outputs)),
        input_readers=input_readers,
        last_ops=last_ops,
        total_param_bytes=float(sum(dict(zip(pb_buf, pb_bytes)).values())),
        host_s=float(sum(op_s[v] for v in sorted(graph.host_ops))),
    )


def _param_pairs(graph: OpGraph, spec: EdgeTpuSpec) -> tuple[list[int], list[int], list[int], list[int]]:
    """(buffer, reader op, device bytes, stream tiles) lists of every distinct constant read, in execution order."""
    pb_buf, pb_op, pb_bytes, pb_w = [], [], [], []
    for op in graph.ops:
        tiles = stream_tiles(graph, op, spec)
        for buf, nbytes in device_param_bytes(graph, op).items():
            if nbytes == 0:  # a conv's bias, counted with its weights; host ops' constants
                continue
            pb_buf.append(buf)
            pb_op.append(op.index)
            pb_bytes.append(nbytes)
            pb_w.append(tiles)
    return pb_buf, pb_op, pb_bytes, pb_w


def _activation_pairs(graph: OpGraph) -> tuple[tuple[list[int], ...], tuple[list[int], list[int]]]:
    """(tensor, reader, producer or -1, link bytes entering, index of its out entry or -1) of every activation
    read, and (producer, link bytes leaving) of every produced tensor that has readers."""
    producer, model_inputs = graph.producer, set(graph.inputs)
    in_t, in_r, in_p, in_b, in_e = [], [], [], [], []  # type: list[int], list[int], list[int], list[int], list[int]
    out_p: list[int] = []
    out_b: list[int] = []
    for t, readers in graph.consumers.items():
        if t in producer:
            q = producer[t]
        elif t in model_inputs:
            q = -1
        else:
            continue
        nb_in, nb_out = link_bytes(graph, t, True), link_bytes(graph, t, False)
        entry = len(out_p) if q >= 0 else -1
        for r in readers:
            in_t.append(t)
            in_r.append(r)
            in_p.append(q)
            in_b.append(nb_in)
            in_e.append(entry)
        if q >= 0:
            out_p.append(q)
            out_b.append(nb_out)
    return (in_t, in_r, in_p, in_b, in_e), (out_p, out_b)


def map_stage_times(ca: CostArrays, stages: np.ndarray, num_stages: int) -> np.ndarray:
    """(K,) seconds of each stage of the monotone map ``stages``, as :func:`hardware.stage_costs` computes them."""
    return _map_terms(ca, np.asarray(stages, dtype=np.int64), num_stages).times


def map_stage_times_many(ca: CostArrays, maps: np.ndarray, num_stages: int) -> np.ndarray:
    """(M, K) seconds: :func:`map_stage_times` of each row of the (M, n) monotone maps ``maps`` in one pass,
    each row bit-identical to its own call (tested)."""
    return _map_times_many(ca, np.asarray(maps, dtype=np.int64).reshape(-1, ca.n), num_stages)


def map_period_s(
    ca: CostArrays, stages: np.ndarray, num_stages: int, replicas: np.ndarray | Sequence[int] | None = None
) -> tuple[float, float]:
    """(period, latency) in seconds of a monotone map whose stage k runs on ``replicas[k]`` TPUs (one each by
    default): :func:`hardware.cost.pipeline_period_ms`, in s."""
    terms_ = _map_terms(ca, np.asarray(stages, dtype=np.int64), num_stages)
    link = terms_.io.sum() + terms_.streamed.sum()
    return terms.period_seconds(ca.spec, terms_.times, link, replicas, ca.host_s), float(terms_.times.sum())


class MapTerms(NamedTuple):
    """Per stage of one map: time (s), activation bytes over the host link, streamed parameter tile-bytes."""

    times: np.ndarray
    io: np.ndarray
    streamed: np.ndarray


def _map_terms(ca: CostArrays, stages: np.ndarray, num_stages: int) -> MapTerms:
    """Stage times (s), host-link activation bytes and streamed tile-bytes of every stage of a monotone map."""
    K, spec = num_stages, ca.spec
    compute = np.bincount(stages, weights=ca.op_s, minlength=K)
    io = np.zeros(K)
    if len(ca.in_reader):
        r_stage = stages[ca.in_reader]
        crossing = (ca.in_producer < 0) | (stages[np.maximum(ca.in_producer, 0)] != r_stage)
        key, first = np.unique(ca.in_tensor[crossing] * K + r_stage[crossing], return_index=True)
        io += np.bincount(key % K, weights=ca.in_bytes_pair[crossing][first], minlength=K)
        produced = crossing & (ca.in_entry >= 0)
        leaves = np.zeros(len(ca.out_producer), dtype=bool)
        leaves[ca.in_entry[produced]] = True
        io += np.bincount(stages[ca.out_producer[leaves]], weights=ca.out_bytes_t[leaves], minlength=K)
    io[K - 1] += ca.model_out_bytes
    tile_bytes: np.ndarray = np.zeros(K)
    if len(ca.pb_op):  # the first reader of each (buffer, stage), then whole layers in execution order per stage
        _, first = np.unique(ca.pb_buf * K + stages[ca.pb_op], return_index=True)
        first = first[np.lexsort((first, stages[ca.pb_op[first]]))]  # by stage, then execution order
        owner, nbytes = stages[ca.pb_op[first]], ca.pb_bytes[first]
        cum = np.cumsum(nbytes)
        before = np.concatenate([[0.0], cum])[np.searchsorted(owner, np.arange(K))]  # bytes of earlier stages
        usable = terms.usable_cache_bytes(spec, io)
        streamed = cum - before[owner] > usable[owner]
        tile_bytes = np.bincount(owner[streamed], weights=(nbytes * ca.pb_tiles[first])[streamed], minlength=K)
    return MapTerms(terms.stage_seconds(spec, compute, terms.stream_seconds(spec, tile_bytes), io), io, tile_bytes)


def _map_times_many(ca: CostArrays, maps: np.ndarray, num_stages: int) -> np.ndarray:
    """:func:`_map_terms`' stage times for each of the (M, n) ``maps`` at once: every term is binned by
    (map, stage), ``map * K + stage``, and within a bin summed in the order one map's call sums it, so each
    row is bit-identical to that call (one map alone stays on :func:`_map_terms`: half the fixed cost)."""
    K, spec = num_stages, ca.spec
    M = maps.shape[0]
    row = np.arange(M)[:, None]
    compute = np.bincount((maps + row * K).ravel(), weights=np.tile(ca.op_s, M), minlength=M * K).reshape(M, K)
    io = np.zeros((M, K))
    if len(ca.in_reader):
        r_stage = maps[:, ca.in_reader]
        crossing = (ca.in_producer < 0) | (maps[:, np.maximum(ca.in_producer, 0)] != r_stage)
        m, pair = np.nonzero(crossing)
        tensors = int(ca.in_tensor.max()) + 1
        key, first = np.unique((m * tensors + ca.in_tensor[pair]) * K + r_stage[m, pair], return_index=True)
        bins = key // (tensors * K) * K + key % K
        io += np.bincount(bins, weights=ca.in_bytes_pair[pair[first]], minlength=M * K).reshape(M, K)
        m, pair = np.nonzero(crossing & (ca.in_entry >= 0))
        leaves = np.zeros((M, len(ca.out_producer)), dtype=bool)
        leaves[m, ca.in_entry[pair]] = True
        m, out = np.nonzero(leaves)
        io += np.bincount(m * K + maps[m, ca.out_producer[out]], weights=ca.out_bytes_t[out], minlength=M * K).reshape(M, K)
    io[:, K - 1] += ca.model_out_bytes
    stream: np.ndarray = np.zeros((M, K))
    if len(ca.pb_op):
        owner_all = (maps[:, ca.pb_op] + row * K).ravel()  # (map, stage) bin of every (buffer, reader) pair
        buffers = int(ca.pb_buf.max()) + 1
        _, first = np.unique((row * buffers + ca.pb_buf).ravel() * K + owner_all % K, return_index=True)
        first = first[np.lexsort((first, owner_all[first]))]  # by map and stage, then execution order
        owner, pb = owner_all[first], first % len(ca.pb_op)
        nbytes = ca.pb_bytes[pb]
        cum = np.cumsum(nbytes)  # whole bytes: exact, so the per-bin prefix below is too
        before = np.concatenate([[0.0], cum])[np.searchsorted(owner, np.arange(M * K))]  # bytes of earlier bins
        usable = terms.usable_cache_bytes(spec, io).ravel()
        streamed = cum - before[owner] > usable[owner]
        weights = (nbytes * ca.pb_tiles[pb])[streamed]
        stream = terms.stream_seconds(spec, np.bincount(owner[streamed], weights=weights, minlength=M * K).reshape(M, K))
    return terms.stage_seconds(spec, compute, stream, io)


def lower_bound_s(ca: CostArrays, num_stages: int) -> float:
    """A bound no plan's stage maximum can beat: one op alone on a TPU, or all the work spread over K TPUs
    (every stage streams at least what exceeds ``cache_bytes``, each byte at least once)."""
    spec, K = ca.spec, num_stages
    cache, invoke = terms.cache_bytes(spec), terms.invoke_seconds(spec)
    # an op's own parameters stream whole (at least once each) where they exceed the largest possible cache
    too_big = ca.pb_bytes > cache
    own_tiles = np.bincount(ca.pb_op[too_big], weights=(ca.pb_bytes * ca.pb_tiles)[too_big], minlength=ca.n)
    own = invoke + ca.op_s + terms.stream_seconds(spec, own_tiles)
    spread = (K * invoke + ca.op_s.sum() + terms.stream_seconds(spec, max(0.0, ca.total_param_bytes - K * cache))) / K
    return float(max(own.max(initial=0.0), spread))
