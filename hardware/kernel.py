"""The device model's vectorised kernel: stage times of every contiguous range of an order, and of
every stage of a stage map, as numpy arrays, from one precomputation per (graph, spec).

:func:`cost_arrays` flattens a graph into index arrays once: per-op time (:func:`hardware.cost.op_seconds`),
(constant buffer, reader) pairs, (activation tensor, reader, producer) pairs, the ops pinned to the
last stage and the op sets of which stage 0 must hold one. From them:

* :func:`range_costs`: ``T[a, b]``, the time of a non-last stage made of ``order[a:b]``, and
  ``T_last[a]``, that of the last stage ``order[a:]``, for every a < b, in O(n^2) numpy work:
  per-op times by prefix sums; parameter bytes by difference arrays (a buffer read at position p
  counts for ranges starting after its previous reader); activation bytes entering a range once
  (for ranges starting after both the producer and the previous reader) and leaving it (produced at
  q, last read at L: every range with a <= q < b <= L); infinite where a pipeline cannot run the range
  (a non-last range holding an op pinned to the last stage);
* :func:`map_stage_times`: the K stage times of a monotone stage map in O(n) (:func:`map_stage_times_many`:
  of many maps in one pass);
* :func:`lower_bound_s`: a bound no K-stage plan's bottleneck can beat.

Each equals :func:`hardware.cost.stage_cost`, the reference, on every split and map (tests), and every
scheduler, the policy's split, refinement and features, and the lower bound call these: the formula's
terms are written here and in :mod:`hardware.cost` only.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from tflite_io import OpGraph, StageMapError

from .cost import device_param_bytes, link_bytes, op_seconds, stream_tiles
from .spec import EdgeTpuSpec

__all__ = [
    "CostArrays",
    "cost_arrays",
    "RangeCosts",
    "range_costs",
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
    pb_buf: np.ndarray  # (buffer, reader op, device bytes, streamed s/byte) of every distinct constant read,
    pb_op: np.ndarray  # in execution order (:func:`hardware.cost.device_param_bytes`, ``stream_tiles``)
    pb_bytes: np.ndarray  # whole bytes (exact in float64: the range kernel relies on it)
    pb_stream_s: np.ndarray
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


def cost_arrays(graph: OpGraph, spec: EdgeTpuSpec) -> CostArrays:
    """Build the :class:`CostArrays` of ``graph`` under ``spec`` (linear in the graph's size)."""
    n = graph.num_ops
    pb_buf, pb_op, pb_bytes, pb_w = [], [], [], []
    for op in graph.ops:
        per_byte = stream_tiles(graph, op, spec) / spec.stream_bytes_per_s
        for buf, nbytes in device_param_bytes(graph, op).items():
            if nbytes == 0:  # a conv's bias, counted with its weights; host ops' constants
                continue
            pb_buf.append(buf)
            pb_op.append(op.index)
            pb_bytes.append(nbytes)
            pb_w.append(per_byte)
    param = np.zeros(n)
    np.add.at(param, np.asarray(pb_op, dtype=np.int64), np.asarray(pb_bytes, dtype=np.float64))
    producer, model_inputs = graph.producer, set(graph.inputs)
    in_t, in_r, in_p, in_b, in_e = [], [], [], [], []
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
    consumers = graph.consumers
    input_readers = tuple(np.asarray(consumers[t], dtype=np.int64) for t in graph.inputs if consumers.get(t)) + tuple(
        np.asarray([v], dtype=np.int64) for v in sorted(graph.first_stage_ops)
    )
    last_ops = np.zeros(n, dtype=bool)
    last_ops[list(graph.last_stage_ops)] = True
    i64 = lambda x: np.asarray(x, dtype=np.int64)  # noqa: E731
    f64 = lambda x: np.asarray(x, dtype=np.float64)  # noqa: E731
    return CostArrays(
        n=n,
        spec=spec,
        op_s=op_seconds(graph, spec),
        param_bytes=param,
        pb_buf=i64(pb_buf),
        pb_op=i64(pb_op),
        pb_bytes=f64(pb_bytes),
        pb_stream_s=f64(pb_w),
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
    )


@dataclass(frozen=True)
class RangeCosts:
    """Per-range stage times and parameter bytes of one order (``inf`` where a range is not runnable)."""

    order: tuple[int, ...]
    time: np.ndarray  # (n+1, n+1): T[a, b] for a non-last stage order[a:b], a < b
    time_last: np.ndarray  # (n+1,): T_last[a] for the last stage order[a:]
    params: np.ndarray  # (n+1, n+1): parameter bytes of order[a:b]
    crossings: np.ndarray  # (n+1,): activation tensors crossing a cut before position b
    max_end: int  # a non-last stage must end at b <= max_end (before the first op pinned last)
    min_first_end: int  # the first stage must end at b >= min_first_end (every model input, ops pinned first)
    io: np.ndarray  # (n+1, n+1): activation bytes into and out of order[a:b] (non-last stage)
    io_last: np.ndarray  # (n+1,): the same for the last stage order[a:]


@lru_cache(maxsize=8)
def empty_ranges(size: int) -> np.ndarray:
    """Boolean mask of the lower triangle with the diagonal (ranges a >= b, which are empty); shared, read-only."""
    mask = np.tri(size, dtype=bool)
    mask.flags.writeable = False
    return mask


def range_sum(n: int, starts: np.ndarray, stops: np.ndarray, cols: np.ndarray, values: np.ndarray) -> np.ndarray:
    """M[a, b] = sum of the values whose a-interval [start, stop) contains a and whose column is < b.

    Complex ``values`` sum two real matrices at once (real and imaginary parts), each bit-identical to its
    own real call, for little more than the time of one."""
    w, size = n + 1, (n + 2) * (n + 1)
    idx = np.concatenate([starts * w + cols + 1, stops * w + cols + 1])
    vals = np.concatenate([values, -values])
    if np.iscomplexobj(vals):
        flat: np.ndarray = np.empty(size, dtype=np.complex128)
        flat.real = np.bincount(idx, weights=vals.real, minlength=size)
        flat.imag = np.bincount(idx, weights=vals.imag, minlength=size)
    else:
        flat = np.bincount(idx, weights=vals, minlength=size)
    diff = flat.reshape(n + 2, w)
    np.cumsum(diff, axis=0, out=diff)  # in place: half the time of allocating cumsums
    out = diff[:w]
    np.cumsum(out, axis=1, out=out)
    return out


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


def range_costs(ca: CostArrays, order: Sequence[int] | np.ndarray) -> RangeCosts:
    """The range cost matrices of ``order``, a topological order of the graph behind ``ca``."""
    n, spec = ca.n, ca.spec
    if sorted(np.asarray(order).tolist()) != list(range(n)):
        raise StageMapError(f"order must list each of the {n} ops once", 0)
    order = np.asarray(order, dtype=np.int64)
    pos = np.empty(n, dtype=np.int64)
    pos[order] = np.arange(n)
    cum = np.concatenate([[0.0], np.cumsum(ca.op_s[order])])

    if len(ca.pb_op):
        p = pos[ca.pb_op]
        key, prev = _prev_in_group(ca.pb_buf, p, np.full(len(p), -1, dtype=np.int64))
        ps = p[key]
        both = range_sum(n, prev + 1, ps + 1, ps, ca.pb_bytes[key] + 1j * (ca.pb_bytes[key] * ca.pb_stream_s[key]))
        params, stream_if = both.real.copy(), both.imag.copy()
    else:
        params = np.zeros((n + 1, n + 1))
        stream_if = np.zeros((n + 1, n + 1))

    # activation bytes entering (ins) and leaving (outs) each range, summed into one difference array:
    # outs = reverse-cumsum over a of cumsum over b of out_diff, rewritten as a forward cumsum over a.
    st, sp, cl, vl = [], [], [], []
    last = np.zeros(0, dtype=np.int64)
    if len(ca.in_reader):
        r = pos[ca.in_reader]
        q = np.where(ca.in_producer >= 0, pos[np.maximum(ca.in_producer, 0)], -1)
        key, prev = _prev_in_group(ca.in_tensor, r, q)
        rs = r[key]
        st.append(prev + 1)
        sp.append(rs + 1)
        cl.append(rs)
        vl.append(ca.in_bytes_pair[key])
        produced = ca.in_entry >= 0
        last = np.full(len(ca.out_producer), -1, dtype=np.int64)
        np.maximum.at(last, ca.in_entry[produced], r[produced])
    if len(last):
        qo = pos[ca.out_producer]
        keep = last < n  # a tensor read by the last op of the order leaves no range ending before n
        b_out = ca.out_bytes_t
        # +b on rows [0, q], columns [q+1, last+1): start 0, stop q+1, column q+1 minus column last+1
        st += [np.zeros_like(qo), np.zeros_like(qo[keep])]
        sp += [qo + 1, qo[keep] + 1]
        cl += [qo, last[keep]]
        vl += [b_out, -b_out[keep]]
        cross: np.ndarray = np.bincount(
            np.concatenate([qo + 1, last + 1]),
            weights=np.concatenate([np.ones(len(qo)), -np.ones(len(qo))]),
            minlength=n + 2,
        )
    else:
        cross = np.zeros(n + 2, dtype=np.float64)
    if st:
        io = range_sum(n, np.concatenate(st), np.concatenate(sp), np.concatenate(cl), np.concatenate(vl))
    else:
        io = np.zeros((n + 1, n + 1))
    crossings = np.cumsum(cross)[: n + 1]

    # the last stage's outputs are the model outputs; no produced tensor leaves the range [a, n)
    io_last = io[:, n] + ca.model_out_bytes
    stream, stream_last = _streamed(params, stream_if, io, io_last, spec)
    time = np.subtract.outer(-cum, -cum)  # cum[b] - cum[a]
    time += spec.t_invoke_s
    time_last = time[:, n] + stream_last + io_last / spec.io_bytes_per_s
    time += stream
    time += io * (1.0 / spec.io_bytes_per_s)

    max_end = int(pos[ca.last_ops].min()) if ca.last_ops.any() else n - 1
    first_reads = [int(pos[r].min()) for r in ca.input_readers]
    min_first_end = max(first_reads, default=0) + 1
    time[empty_ranges(n + 1)] = np.inf
    time[:, max_end + 1 :] = np.inf
    time_last[max_end + 1 :] = np.inf
    time_last[n] = np.inf
    return RangeCosts(tuple(int(v) for v in order), time, time_last, params, crossings, max_end, min_first_end, io, io_last)


def _streamed(
    params: np.ndarray, stream_if: np.ndarray, io: np.ndarray, io_last: np.ndarray, spec: EdgeTpuSpec
) -> tuple[np.ndarray, np.ndarray]:
    """Streaming time of every range (non-last and last): whole layers in the order's sequence are cached
    until the usable cache ``cache - share * io`` is full, the rest cost ``stream_if`` from there on.

    ``params[a, j]`` (bytes of positions a..j-1) grows with j, so the cached prefix of range [a, b) ends
    at j* = the last j <= b with ``params[a, j] <= usable[a, b]``, and the range streams
    ``stream_if[a, b] - stream_if[a, j*]``. Parameter bytes are whole numbers (exact in float64), so
    ``params <= usable`` is ``params <= floor(usable)``, and with each row shifted by ``row * shift``
    (``shift`` above every byte count) the flattened matrix is sorted: one searchsorted finds j* for every
    range that does not fit whole (the others stream nothing).
    """
    n1 = params.shape[0]
    usable = np.maximum(spec.cache_bytes - spec.cache_io_share * io, 0.0)
    usable_last = np.maximum(spec.cache_bytes - spec.cache_io_share * io_last, 0.0)
    stream = np.zeros_like(params)
    empty = empty_ranges(n1)
    upper = ~empty
    if not len(params) or params[upper].max(initial=0.0) <= min(usable[upper].min(initial=np.inf), usable_last.min()):
        return stream, np.zeros(n1)  # everything fits everywhere
    shift = 2.0 ** np.ceil(np.log2(max(float(params.max()), spec.cache_bytes) + 2.0))
    base = np.arange(n1, dtype=np.float64) * shift
    keys = params.copy()
    keys[empty] = -1.0  # below every query of its row: positions before a (and a itself) always count
    keys += base[:, None]
    flat = keys.ravel()
    a, b = np.nonzero(upper & (params > usable))  # ranges that do not fit whole
    j = np.searchsorted(flat, np.floor(usable[a, b]) + base[a], side="right") - a * n1 - 1  # j < b
    stream[a, b] = stream_if[a, b] - stream_if[a, j]
    rows = np.arange(n1)
    j_last = np.searchsorted(flat, np.floor(usable_last) + base, side="right") - rows * n1 - 1
    return stream, stream_if[:, n1 - 1] - stream_if[rows, j_last]


def map_stage_times(ca: CostArrays, stages: np.ndarray, num_stages: int) -> np.ndarray:
    """(K,) seconds of each stage of the monotone map ``stages``, as :func:`hardware.stage_costs` computes them."""
    return _map_terms(ca, np.asarray(stages, dtype=np.int64), num_stages)[0]


def map_stage_times_many(ca: CostArrays, maps: np.ndarray, num_stages: int) -> np.ndarray:
    """(M, K) seconds: :func:`map_stage_times` of each row of the (M, n) monotone maps ``maps`` in one pass,
    each row bit-identical to its own call (tested)."""
    return _map_times_many(ca, np.asarray(maps, dtype=np.int64).reshape(-1, ca.n), num_stages)


def map_period_s(ca: CostArrays, stages: np.ndarray, num_stages: int) -> tuple[float, float]:
    """(period, latency) in seconds of a monotone map: :func:`hardware.cost.pipeline_period_ms`, in s."""
    times, io = _map_terms(ca, np.asarray(stages, dtype=np.int64), num_stages)
    link = io.sum() / ca.spec.shared_link_bytes_per_s if ca.spec.shared_link_bytes_per_s > 0 else 0.0
    return max(float(times.max()), float(link)), float(times.sum())


def _map_terms(ca: CostArrays, stages: np.ndarray, num_stages: int) -> tuple[np.ndarray, np.ndarray]:
    """Stage times (s) and host-link bytes of every stage of a monotone map."""
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
    stream: np.ndarray = np.zeros(K)
    if len(ca.pb_op):  # the first reader of each (buffer, stage), then whole layers in execution order per stage
        _, first = np.unique(ca.pb_buf * K + stages[ca.pb_op], return_index=True)
        first = first[np.lexsort((first, stages[ca.pb_op[first]]))]  # by stage, then execution order
        owner, nbytes = stages[ca.pb_op[first]], ca.pb_bytes[first]
        cum = np.cumsum(nbytes)
        before = np.concatenate([[0.0], cum])[np.searchsorted(owner, np.arange(K))]  # bytes of earlier stages
        usable = np.maximum(spec.cache_bytes - spec.cache_io_share * io, 0.0)
        streamed = cum - before[owner] > usable[owner]
        stream = np.bincount(owner[streamed], weights=(nbytes * ca.pb_stream_s[first])[streamed], minlength=K)
    return spec.t_invoke_s + compute + stream + io / spec.io_bytes_per_s, io


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
        usable = np.maximum(spec.cache_bytes - spec.cache_io_share * io, 0.0).ravel()
        streamed = cum - before[owner] > usable[owner]
        weights = (nbytes * ca.pb_stream_s[pb])[streamed]
        stream = np.bincount(owner[streamed], weights=weights, minlength=M * K).reshape(M, K)
    return spec.t_invoke_s + compute + stream + io / spec.io_bytes_per_s


def lower_bound_s(ca: CostArrays, num_stages: int) -> float:
    """A bound no plan's stage maximum can beat: one op alone on a TPU, or all the work spread over K TPUs
    (every stage streams at least what exceeds ``cache_bytes``, each byte at least once)."""
    spec, K = ca.spec, num_stages
    # an op's own parameters stream whole (at least once each) where they exceed the largest possible cache
    too_big = ca.pb_bytes > spec.cache_bytes
    own_stream = np.bincount(ca.pb_op[too_big], weights=(ca.pb_bytes * ca.pb_stream_s)[too_big], minlength=ca.n)
    own = spec.t_invoke_s + ca.op_s + own_stream
    spread = (
        K * spec.t_invoke_s + ca.op_s.sum() + max(0.0, ca.total_param_bytes - K * spec.cache_bytes) / spec.stream_bytes_per_s
    ) / K
    return float(max(own.max(initial=0.0), spread))
