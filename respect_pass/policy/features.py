"""Per-graph numpy arrays and the policy's node features (no torch here).

:class:`GraphArrays` flattens one :class:`~tflite_io.OpGraph` under one
:class:`~hardware.EdgeTpuSpec` into index arrays built once per graph: the
distinct precedence pairs, per-op compute time, parameter and activation
bytes, the (buffer, reader) and (tensor, reader) pairs the range-cost matrices
need (:mod:`respect_pass.schedulers.split`), the pinned ops (model-output
producers and their descendants, which every plan puts in the last stage) and
each op's ancestor set as a boolean matrix.

:func:`node_features` turns them into a dimensionless feature matrix: every
time is divided by the ideal stage time ``T1 / K`` (``T1`` = the whole graph
on one TPU), every byte count by the cache size or by the graph's totals, so a
model trained on 120-op synthetic graphs sees the same ranges on a 510-op
DenseNet. ``K`` enters through the stage coordinates (the share of the
graph's compute and parameters that must come before an op, times ``K``) and
through the context columns shared by every node.
"""

from __future__ import annotations

from dataclasses import dataclass, fields

import numpy as np

from hardware import EdgeTpuSpec, op_class
from hardware.kernel import CostArrays, cost_arrays
from hardware.terms import link_seconds, one_tpu_terms, own_seconds
from tflite_io import OpGraph

__all__ = ["GraphArrays", "graph_arrays", "node_features", "NODE_FEATURES", "CONTEXT_FEATURES", "NUM_FEATURES"]

#: Names of the per-node columns of :func:`node_features`, then the per-graph context columns.
NODE_FEATURES = (
    "log_compute_per_stage",
    "param_per_cache",
    "log_param_per_stage_share",
    "log_out_io_per_stage",
    "log_in_io_per_stage",
    "anc_compute_share",
    "anc_param_share",
    "desc_compute_share",
    "desc_param_share",
    "stage_coord_compute",
    "stage_coord_param",
    "stage_coord_time",
    "rev_coord_time",
    "log_cache_coord",
    "anc_count_share",
    "desc_count_share",
    "depth",
    "rev_depth",
    "log_in_degree",
    "log_out_degree",
    "pinned",
    "reads_input",
    "sink",
    "conv",
    "depthwise",
    "elementwise",
    "has_params",
)
CONTEXT_FEATURES = (
    "inv_k",
    "k_over_8",
    "log_params_per_cache",
    "params_per_k_cache",
    "compute_share",
    "stream_share",
    "io_share",
    "log_max_op_per_stage",
    "log_invoke_per_stage",
)
NUM_FEATURES = len(NODE_FEATURES) + len(CONTEXT_FEATURES)


@dataclass(frozen=True)
class GraphArrays(CostArrays):
    """The device model's :class:`~hardware.kernel.CostArrays` of one graph under one spec, plus what the
    policy's features and decoder need (see the module docstring)."""

    src: np.ndarray  # (E,) distinct precedence pairs u -> v
    dst: np.ndarray
    succs: tuple[tuple[int, ...], ...]
    indeg: np.ndarray  # (n,) number of distinct predecessors
    out_bytes: np.ndarray  # (n,) activation bytes each op produces for other ops or the model
    in_bytes: np.ndarray  # (n,) activation bytes each op reads
    pinned: np.ndarray  # (n,) bool: pinned to the last stage or a descendant of such an op
    reads_input: np.ndarray  # (n,) bool
    op_class: np.ndarray  # (n,) 0 conv, 1 depthwise, 2 elementwise
    ancestors: np.ndarray  # (n, n) bool: ancestors[v, u] = u is a proper ancestor of v
    depth: np.ndarray  # (n,) longest path from a source, in ops
    rev_depth: np.ndarray  # (n,) longest path to a sink, in ops


def graph_arrays(graph: OpGraph, spec: EdgeTpuSpec) -> GraphArrays:
    """Build the :class:`GraphArrays` of ``graph`` (linear in its size, plus an n x n ancestor matrix)."""
    ca = cost_arrays(graph, spec)
    n = graph.num_ops
    preds, succs = graph.preds, graph.succs
    src = np.fromiter((u for v in range(n) for u in preds[v]), dtype=np.int64)
    dst = np.fromiter((v for v in range(n) for _ in preds[v]), dtype=np.int64)
    indeg = np.fromiter((len(p) for p in preds), dtype=np.int64, count=n)
    classes = {"conv": 0, "depthwise": 1, "elementwise": 2}
    cls = np.fromiter((classes[op_class(op.op_type)] for op in graph.ops), dtype=np.int64, count=n)
    in_bytes = np.zeros(n)
    np.add.at(in_bytes, ca.in_reader, ca.in_bytes_pair)
    out_bytes = np.zeros(n)
    np.add.at(out_bytes, ca.out_producer, ca.out_bytes_t)
    for t in graph.outputs:
        if t in graph.producer:
            out_bytes[graph.producer[t]] += graph.tensors[t].nbytes
    reads_input = np.zeros(n, dtype=bool)
    for r in ca.input_readers:
        reads_input[r] = True

    # ancestor sets as Python integers (bit u set = u is an ancestor), then one unpack into a bool matrix
    bits = [0] * n
    depth_l = [0] * n
    for v in range(n):
        acc, d = 0, 0
        for u in preds[v]:
            acc |= bits[u] | (1 << u)
            if depth_l[u] + 1 > d:
                d = depth_l[u] + 1
        bits[v], depth_l[v] = acc, d
    nbytes = (n + 7) // 8
    raw = np.frombuffer(b"".join(b.to_bytes(nbytes, "little") for b in bits), dtype=np.uint8).reshape(n, nbytes)
    anc = np.unpackbits(raw, axis=1, count=n, bitorder="little").astype(bool)
    depth = np.asarray(depth_l, dtype=np.int64)
    out_mask = sum(1 << v for v in graph.last_stage_ops)
    pinned = ca.last_ops | np.fromiter((b & out_mask != 0 for b in bits), dtype=bool, count=n)
    rev = np.zeros(n, dtype=np.int64)
    for v in range(n - 1, -1, -1):
        s = succs[v]
        if s:
            rev[v] = rev[list(s)].max() + 1
    return GraphArrays(
        **{f.name: getattr(ca, f.name) for f in fields(CostArrays)},
        src=src,
        dst=dst,
        succs=succs,
        indeg=indeg,
        out_bytes=out_bytes,
        in_bytes=in_bytes,
        pinned=pinned,
        reads_input=reads_input,
        op_class=cls,
        ancestors=anc,
        depth=depth,
        rev_depth=rev,
    )


def node_features(ga: GraphArrays, num_stages: int) -> np.ndarray:
    """(n, NUM_FEATURES) float32 features of every op for a ``num_stages``-stage plan."""
    spec, n, K = ga.spec, ga.n, float(num_stages)
    c, p = ga.op_s, ga.param_bytes
    P = max(ga.total_param_bytes, float(p.sum()), 1.0)
    in_model = float(ga.in_bytes[ga.reads_input].sum()) if ga.reads_input.any() else 0.0
    one = one_tpu_terms(spec, max(float(c.sum()), 1e-12), P, in_model + ga.model_out_bytes)
    C, cache, stream, io, T1 = one.compute_s, one.cache, one.stream_s, one.link_s, one.total_s
    tau = max(T1 / K, 1e-12)
    own_time = own_seconds(spec, c, p)

    anc = ga.ancestors.astype(np.float64)
    anc_c, anc_p = anc @ c, anc @ p
    desc_c, desc_p = c @ anc, p @ anc
    anc_t, desc_t = anc @ own_time, own_time @ anc
    T_own = max(float(own_time.sum()), 1e-12)
    anc_n, desc_n = anc.sum(1), anc.sum(0)
    outdeg = np.bincount(ga.src, minlength=n)
    md = max(int(ga.depth.max()), 1)
    sink = outdeg == 0

    cols = np.empty((n, NUM_FEATURES), dtype=np.float64)
    cols[:, 0] = np.log1p(c / tau)
    cols[:, 1] = p / cache
    cols[:, 2] = np.log1p(p / (P / K))
    cols[:, 3] = np.log1p(link_seconds(spec, ga.out_bytes) / tau)
    cols[:, 4] = np.log1p(link_seconds(spec, ga.in_bytes) / tau)
    cols[:, 5] = anc_c / C
    cols[:, 6] = anc_p / P
    cols[:, 7] = desc_c / C
    cols[:, 8] = desc_p / P
    cols[:, 9] = (anc_c + 0.5 * c) / C * K / 8.0
    cols[:, 10] = (anc_p + 0.5 * p) / P * K / 8.0
    cols[:, 11] = (anc_t + 0.5 * own_time) / T_own * K / 8.0
    cols[:, 12] = (desc_t + 0.5 * own_time) / T_own * K / 8.0
    cols[:, 13] = np.log1p((anc_p + p) / cache)
    cols[:, 14] = anc_n / n
    cols[:, 15] = desc_n / n
    cols[:, 16] = ga.depth / md
    cols[:, 17] = ga.rev_depth / md
    cols[:, 18] = np.log1p(ga.indeg)
    cols[:, 19] = np.log1p(outdeg)
    cols[:, 20] = ga.pinned
    cols[:, 21] = ga.reads_input
    cols[:, 22] = sink
    cols[:, 23:26] = np.eye(3)[ga.op_class]
    cols[:, 26] = p > 0
    j = len(NODE_FEATURES)
    cols[:, j + 0] = 1.0 / K
    cols[:, j + 1] = K / 8.0
    cols[:, j + 2] = np.log1p(P / cache)
    cols[:, j + 3] = np.log1p(P / (K * cache))
    cols[:, j + 4] = C / T1
    cols[:, j + 5] = stream / T1
    cols[:, j + 6] = io / T1
    cols[:, j + 7] = np.log1p(float(own_time.max()) / tau)
    cols[:, j + 8] = np.log1p(one.invoke_s / tau)
    return cols.astype(np.float32)
