"""Fit the device model's continuous constants to measured stage times.

With the cache constants (``cache_bytes``, ``cache_io_share``) and the conv
stream tile (``stream_tile_positions``) fixed, the stage time of
:mod:`hardware.cost` is linear in six constants::

    T = t_invoke * 1 + (1/eff_conv) * conv_s + (1/eff_dw) * dw_s + elementwise_s_per_byte * elem_bytes
        + (1/io_bytes_per_s) * link_bytes + (1/stream_bytes_per_s) * streamed_bytes_x_tiles + host_s

:func:`stage_features` gives the columns (``host_s``, the CPU ops' time, is
not fitted: its constants are kept), ``stage_features @ theta``
equals :func:`hardware.cost.stage_cost` (tested), and :func:`fit_linear`
solves relative least squares, optionally pulled towards a prior spec
(ridge on ``theta / theta_prior - 1``), so a handful of measurements refine a
spec without over-fitting it. :func:`fit_tile` profiles the tile over the
ranges of values over which the samples' tile counts stay the same.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from tflite_io import OpGraph, SegmentInterface, segment_interfaces

from .cost import CHANNEL_GROUP, cache_layers, host_handoff_bytes, link_bytes, stream_tiles
from .spec import EdgeTpuSpec, op_class

__all__ = [
    "Sample",
    "SegmentTerms",
    "segment_terms",
    "FEATURES",
    "stage_features",
    "theta",
    "with_theta",
    "predict_ms",
    "fit_linear",
    "fit_tile",
    "TILE_RANGE",
]

#: The columns of :func:`stage_features`; the last (host time) has coefficient 1 and is not fitted.
FEATURES = ("invokes", "conv_s", "depthwise_s", "elementwise_bytes", "link_bytes", "streamed_bytes", "host_s")
#: Where :func:`fit_tile` looks for the conv stream tile (output positions).
TILE_RANGE = (64, 16384)
_BOUNDS = (0.02, 50.0)  # a fitted constant stays within these factors of its prior


@dataclass(frozen=True)
class Sample:
    """One measured segment: its graph (ops placed) as one stage, and its measured time in ms."""

    graph: OpGraph
    measured_ms: float
    label: str = ""


@dataclass(frozen=True)
class SegmentTerms:
    """The linear terms of one segment's time (:data:`FEATURES`, the streamed column left 0), its streamed
    parameter bytes by output-position count (a layer streams ``ceil(positions / tile)`` times; 1 for
    non-conv layers), and the bytes it moves over its host link (In + Out)."""

    linear: np.ndarray
    streamed: dict[int, float]
    io_bytes: float


def segment_terms(graph: OpGraph, seg: SegmentInterface, spec: EdgeTpuSpec) -> SegmentTerms:
    """:class:`SegmentTerms` of ``seg`` (cache and host constants from ``spec``), as :mod:`hardware.cost` costs it."""
    f = np.zeros(len(FEATURES))
    f[0] = 1.0
    in_b = sum(link_bytes(graph, t, True) for t in seg.inputs)
    out_b = sum(link_bytes(graph, t, False) for t in seg.outputs)
    f[4] = in_b + out_b
    for v in seg.ops:
        op = graph.ops[v]
        if v in graph.host_ops:
            f[6] += spec.cpu_op_s + op.macs / spec.cpu_macs_per_s
            f[4] += host_handoff_bytes(graph, v)
            continue
        f[6] += spec.t_op_s
        kind = op_class(op.op_type)
        if kind == "elementwise":
            f[3] += sum(graph.tensors[t].nbytes for t in op.outputs)
        else:
            shape = graph.tensors[op.outputs[0]].shape if op.outputs else ()
            c = max(int(shape[-1]), 1) if shape else 1
            f[1 if kind == "conv" else 2] += op.macs * (-(-c // CHANNEL_GROUP) * CHANNEL_GROUP / c) / spec.peak_macs_per_s
    usable = max(0.0, spec.cache_bytes - spec.cache_io_share * (in_b + out_b))
    per_position = spec.with_(stream_tile_positions=1)  # stream_tiles then counts output positions
    streamed: dict[int, float] = {}
    for op, nbytes in cache_layers(graph, seg.ops, usable)[1]:
        p = stream_tiles(graph, op, per_position)
        streamed[p] = streamed.get(p, 0.0) + nbytes
    return SegmentTerms(f, streamed, float(in_b + out_b))


def stage_features(graph: OpGraph, spec: EdgeTpuSpec) -> np.ndarray:
    """The columns of :data:`FEATURES` for the whole graph run as one stage on one Edge TPU."""
    terms = segment_terms(graph, segment_interfaces(graph, (0,) * graph.num_ops, 1)[0], spec)
    f = terms.linear.copy()
    tile = spec.stream_tile_positions
    f[5] = sum(nbytes * max(1, -(-p // tile)) for p, nbytes in terms.streamed.items())
    return f


def theta(spec: EdgeTpuSpec) -> np.ndarray:
    """The coefficients of :data:`FEATURES` in ``spec``."""
    return np.array(
        [
            spec.t_invoke_s,
            1 / spec.efficiency["conv"],
            1 / spec.efficiency["depthwise"],
            spec.elementwise_s_per_byte,
            1 / spec.io_bytes_per_s,
            1 / spec.stream_bytes_per_s,
            1.0,
        ]
    )


def with_theta(spec: EdgeTpuSpec, th: np.ndarray, name: str | None = None) -> EdgeTpuSpec:
    """``spec`` with the six fitted constants taken from ``th`` (efficiencies capped at 1)."""
    return spec.with_(
        name=name or spec.name,
        t_invoke_s=float(th[0]),
        efficiency={"conv": float(min(1.0, 1 / th[1])), "depthwise": float(min(1.0, 1 / th[2]))},
        elementwise_s_per_byte=float(th[3]),
        io_bytes_per_s=float(1 / th[4]),
        stream_bytes_per_s=float(1 / th[5]),
    )


def predict_ms(samples: Sequence[Sample], spec: EdgeTpuSpec) -> np.ndarray:
    """Predicted ms of every sample under ``spec``."""
    return np.array([stage_features(s.graph, spec) @ theta(spec) * 1e3 for s in samples])


def fit_linear(samples: Sequence[Sample], prior: EdgeTpuSpec, prior_weight: float = 0.0) -> EdgeTpuSpec:
    """Least squares on relative errors for the six linear constants, cache and tile as in ``prior``.

    A constant no sample informs keeps its prior value; ``prior_weight`` > 0
    pulls every constant towards its prior (relative ridge), for refits from a
    few measurements.
    """
    if not samples:
        return prior
    th0 = theta(prior)
    y = np.array([s.measured_ms for s in samples]) / 1e3
    feats = np.array([stage_features(s.graph, prior) for s in samples])
    rhs = 1.0 - feats[:, 6] / y  # the host part is not fitted
    a = feats[:, :6] * th0[:6] / y[:, None]
    informed = np.abs(a).sum(axis=0) > 1e-6 * max(float(np.abs(a).sum()), 1e-300)
    rows, b = [a[:, informed]], [rhs]
    if prior_weight > 0:
        n = int(informed.sum())
        rows.append(math.sqrt(prior_weight) * np.eye(n))
        b.append(math.sqrt(prior_weight) * np.ones(n))
    u = np.ones(6)
    u[informed] = np.linalg.lstsq(np.vstack(rows), np.concatenate(b), rcond=None)[0]
    u = np.clip(u, *_BOUNDS)
    return with_theta(prior, np.append(th0[:6] * u, 1.0))


def _tile_candidates(samples: Sequence[Sample], lo: int, hi: int) -> list[int]:
    """One tile (the geometric middle) per range of tile values over which every conv's tile count is constant."""
    positions = set()
    for s in samples:
        for op in s.graph.ops:
            if op.op_type in ("CONV_2D", "TRANSPOSE_CONV") and op.outputs:
                shape = s.graph.tensors[op.outputs[0]].shape
                positions.add(math.prod(shape[1:-1]) if len(shape) >= 3 else 1)
    cuts = {lo, hi + 1}
    for p in positions:
        for m in range(1, p + 1):
            c = -(-p // m)  # the smallest tile giving m tiles
            if c < lo:
                break
            if c <= hi:
                cuts.add(c)
    edges = sorted(cuts)
    return [round(math.sqrt(a * (b - 1))) for a, b in zip(edges, edges[1:])]


def fit_tile(samples: Sequence[Sample], prior: EdgeTpuSpec, prior_weight: float = 0.0) -> EdgeTpuSpec:
    """:func:`fit_linear` for every distinct tile pattern of the samples; the one with the least error."""
    best: tuple[float, EdgeTpuSpec] | None = None
    y = np.array([s.measured_ms for s in samples])
    for tile in _tile_candidates(samples, *TILE_RANGE):
        spec = fit_linear(samples, prior.with_(stream_tile_positions=tile), prior_weight)
        err = float(np.sum(np.log(predict_ms(samples, spec) / y) ** 2))
        if best is None or err < best[0] - 1e-12:
            best = (err, spec)
    return prior if best is None else best[1]
