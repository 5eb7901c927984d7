"""Fit the device model's continuous constants to measured stage times.

With the cache constants (``cache_bytes``, ``cache_io_share``) and the conv
stream tile (``stream_tile_positions``) fixed, the stage time of
:mod:`hardware.cost` is linear in six constants (:data:`FITTED`)::

    T = t_invoke * 1 + (1/eff_conv) * conv_s + (1/eff_dw) * dw_s + elementwise_s_per_byte * elem_bytes
        + (1/io_bytes_per_s) * link_bytes + (1/stream_bytes_per_s) * streamed_bytes_x_tiles + host_s

:func:`stage_features` gives the columns (``host_s``, the CPU ops' time, is
not fitted: its constants are kept), ``stage_features @ theta``
equals :func:`hardware.cost.stage_cost` (tested), and :func:`fit_linear`
solves relative least squares, optionally pulled towards a prior spec
(ridge on ``theta / theta_prior - 1``), so a handful of measurements refine a
spec without over-fitting it. :func:`fit_tile` profiles the tile over the
ranges of values over which the samples' tile counts stay the same
(:func:`tile_ranges`, within :data:`TILE_RANGE`).

:class:`StageTable` holds the same columns for every stage of many pipelines,
for fits that predict them all under many constants (``tools/calibrate.py``);
:func:`constants` / :func:`constant_rows` read every cost constant of a spec
by name, for reports, and :func:`rounded` rounds the fitted ones.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np

from tflite_io import OpGraph, SegmentInterface, segment_interfaces

from . import terms
from .cost import cache_layers, host_handoff_bytes, link_bytes, stream_tiles
from .spec import EdgeTpuSpec, op_class

__all__ = [
    "Sample",
    "SegmentTerms",
    "segment_terms",
    "FEATURES",
    "FITTED",
    "UNITS",
    "stage_features",
    "theta",
    "with_theta",
    "constants",
    "constant_rows",
    "rounded",
    "predict_ms",
    "fit_linear",
    "fit_tile",
    "tile_ranges",
    "StageTable",
    "stage_table",
    "TILE_RANGE",
]

#: The columns of :func:`stage_features`; the last (host time) has coefficient 1 and is not fitted.
FEATURES = ("invokes", "conv_s", "depthwise_s", "elementwise_bytes", "link_bytes", "streamed_bytes", "host_s")
#: The constants whose coefficients are ``theta[:6]``, in that order, as :func:`constants` names them.
FITTED = (
    "t_invoke_s",
    "efficiency conv",
    "efficiency depthwise",
    "elementwise_s_per_byte",
    "io_bytes_per_s",
    "stream_bytes_per_s",
)
#: Where :func:`fit_tile` (and ``tools/calibrate.py``) look for the conv stream tile (output positions).
TILE_RANGE = (64, 16384)
_BOUNDS = (0.02, 50.0)  # a fitted constant stays within these factors of its prior
#: Every cost constant of :class:`EdgeTpuSpec` as :func:`constants` names it, with its unit, in the order
#: reports list them: the fitted time constants, the tile, the cache, the shared link, the fixed ones.
UNITS = {
    "efficiency conv": "",
    "efficiency depthwise": "",
    "elementwise_s_per_byte": "s/B",
    "t_invoke_s": "s",
    "io_bytes_per_s": "B/s",
    "stream_bytes_per_s": "B/s",
    "stream_tile_positions": "positions",
    "cache_bytes": "B",
    "cache_io_share": "",
    "shared_link_bytes_per_s": "B/s",
    "peak_macs_per_s": "MAC/s",
    "t_op_s": "s",
    "cpu_op_s": "s",
    "cpu_macs_per_s": "MAC/s",
    "host_cores": "cores",
    "host_op_scale": "",
    "host_ref_ms": "ms",
    "reload_rate_factor": "",
    "t_switch_s": "s",
}


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
    peak = spec.with_(efficiency={"conv": 1.0, "depthwise": 1.0})  # mac_seconds at efficiency 1: the columns
    for v in seg.ops:
        op = graph.ops[v]
        if v in graph.host_ops:  # its hand-off bytes cross the host link: the link column
            f[6] += terms.host_op_seconds(spec, op.macs, 0.0, graph.host_seconds.get(v))
            f[4] += host_handoff_bytes(graph, v)
            continue
        f[6] += terms.op_overhead_seconds(spec)
        kind = op_class(op.op_type)
        if kind == "elementwise":
            f[3] += sum(graph.tensors[t].nbytes for t in op.outputs) * terms.clock_slowdown(spec)
        else:
            shape = graph.tensors[op.outputs[0]].shape if op.outputs else ()
            f[1 if kind == "conv" else 2] += terms.mac_seconds(peak, kind, op.macs, max(int(shape[-1]), 1) if shape else 1)
    usable = float(terms.usable_cache_bytes(spec, in_b + out_b))
    per_position = spec.with_(stream_tile_positions=1)  # stream_tiles then counts output positions
    streamed: dict[int, float] = {}
    for op, nbytes in cache_layers(graph, seg.ops, usable)[1]:
        p = stream_tiles(graph, op, per_position)
        streamed[p] = streamed.get(p, 0.0) + nbytes
    return SegmentTerms(f, streamed, float(in_b + out_b))


def stage_features(graph: OpGraph, spec: EdgeTpuSpec) -> np.ndarray:
    """The columns of :data:`FEATURES` for the whole graph run as one stage on one Edge TPU."""
    seg = segment_terms(graph, segment_interfaces(graph, (0,) * graph.num_ops, 1)[0], spec)
    f = seg.linear.copy()
    f[5] = sum(nbytes * terms.stream_tile_count(spec, p) for p, nbytes in seg.streamed.items())
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


def constants(spec: EdgeTpuSpec) -> dict[str, float]:
    """Every cost constant of ``spec`` by name (the keys of :data:`UNITS`, in that order)."""
    return {
        "efficiency conv": spec.efficiency["conv"],
        "efficiency depthwise": spec.efficiency["depthwise"],
        "elementwise_s_per_byte": spec.elementwise_s_per_byte,
        "t_invoke_s": spec.t_invoke_s,
        "io_bytes_per_s": spec.io_bytes_per_s,
        "stream_bytes_per_s": spec.stream_bytes_per_s,
        "stream_tile_positions": spec.stream_tile_positions,
        "cache_bytes": spec.cache_bytes,
        "cache_io_share": spec.cache_io_share,
        "shared_link_bytes_per_s": spec.shared_link_bytes_per_s,
        "peak_macs_per_s": spec.peak_macs_per_s,
        "t_op_s": spec.t_op_s,
        "cpu_op_s": spec.cpu_op_s,
        "cpu_macs_per_s": spec.cpu_macs_per_s,
        "host_cores": spec.host_cores,
        "host_op_scale": spec.host_op_scale,
        "host_ref_ms": spec.host_ref_ms,
        "reload_rate_factor": spec.reload_rate_factor,
        "t_switch_s": spec.t_switch_s,
    }


def constant_rows(spec: EdgeTpuSpec) -> list[tuple[str, float, str]]:
    """``(name, value, unit)`` of every cost constant of ``spec``, in the order of :data:`UNITS`."""
    return [(name, value, UNITS[name]) for name, value in constants(spec).items()]


def rounded(spec: EdgeTpuSpec, digits: int = 3) -> EdgeTpuSpec:
    """``spec`` with the :data:`FITTED` constants rounded to ``digits`` significant digits in their own units."""
    c = {name: float(f"{value:.{digits}g}") for name, value in constants(spec).items() if name in FITTED}
    return spec.with_(
        t_invoke_s=c["t_invoke_s"],
        efficiency={"conv": c["efficiency conv"], "depthwise": c["efficiency depthwise"]},
        elementwise_s_per_byte=c["elementwise_s_per_byte"],
        io_bytes_per_s=c["io_bytes_per_s"],
        stream_bytes_per_s=c["stream_bytes_per_s"],
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


def tile_ranges(positions: Iterable[int], lo: int = TILE_RANGE[0], hi: int = TILE_RANGE[1]) -> list[tuple[int, int]]:
    """The ranges ``[a, b]`` of tile values in ``[lo, hi]`` over which ``ceil(p / tile)`` stays the same for
    every output-position count ``p`` of ``positions``: one fit per range covers every tile."""
    cuts = {lo, hi + 1}
    for p in map(int, positions):
        for m in range(1, p + 1):
            c = -(-p // m)  # the smallest tile giving m tiles
            if c < lo:
                break
            if c <= hi:
                cuts.add(c)
    edges = sorted(cuts)
    return [(a, b - 1) for a, b in itertools.pairwise(edges)]


def _tile_candidates(samples: Sequence[Sample]) -> list[int]:
    """One tile (the geometric middle) per range of :func:`tile_ranges` of the samples' convs."""
    positions = set()
    for s in samples:
        for op in s.graph.ops:
            if op.op_type in ("CONV_2D", "TRANSPOSE_CONV") and op.outputs:
                shape = s.graph.tensors[op.outputs[0]].shape
                positions.add(math.prod(shape[1:-1]) if len(shape) >= 3 else 1)
    return [round(math.sqrt(a * b)) for a, b in tile_ranges(positions)]


def fit_tile(samples: Sequence[Sample], prior: EdgeTpuSpec, prior_weight: float = 0.0) -> EdgeTpuSpec:
    """:func:`fit_linear` for every distinct tile pattern of the samples; the one with the least error."""
    best: tuple[float, EdgeTpuSpec] | None = None
    y = np.array([s.measured_ms for s in samples])
    for tile in _tile_candidates(samples):
        spec = fit_linear(samples, prior.with_(stream_tile_positions=tile), prior_weight)
        err = float(np.sum(np.log(predict_ms(samples, spec) / y) ** 2))
        if best is None or err < best[0] - 1e-12:
            best = (err, spec)
    return prior if best is None else best[1]


@dataclass(frozen=True)
class StageTable:
    """:class:`SegmentTerms` of every stage of many pipelines as arrays, to predict them all under many
    constants at once (a fit's inner loop): ``features(tiles) @ theta`` is every stage's time in seconds.

    ``linear``: one row of :data:`FEATURES` per stage (streamed column 0); ``streamed``: per stage, the
    streamed bytes by output-position count (columns: ``positions``); ``io_bytes``: per stage, In + Out;
    ``starts``: each pipeline's first row."""

    linear: np.ndarray
    streamed: np.ndarray
    positions: np.ndarray
    io_bytes: np.ndarray
    starts: np.ndarray

    def tiles(self, spec: EdgeTpuSpec) -> np.ndarray:
        """How often a layer of each output-position count streams under ``spec``'s tile."""
        return np.array([terms.stream_tile_count(spec, int(p)) for p in self.positions], dtype=float)

    def features(self, tiles: np.ndarray) -> np.ndarray:
        """Every stage's :data:`FEATURES`, the streamed column for these tile counts (:meth:`tiles`)."""
        f = self.linear.copy()
        f[:, 5] = self.streamed @ tiles
        return f

    def stage_seconds(self, spec: EdgeTpuSpec) -> np.ndarray:
        """Every stage's time under ``spec`` (whose cache and host constants built the table)."""
        return self.features(self.tiles(spec)) @ theta(spec)

    def latency_seconds(self, stage_s: np.ndarray) -> np.ndarray:
        """Per pipeline: the sum of its stage times."""
        return np.add.reduceat(stage_s, self.starts)

    def period_seconds(self, stage_s: np.ndarray, spec: EdgeTpuSpec) -> np.ndarray:
        """Per pipeline, :func:`hardware.terms.period_seconds`: its slowest stage, ``spec``'s shared host link
        moving every stage's In + Out and streamed parameters, or the host's cores running its host ops."""
        link = self.io_bytes + self.streamed @ self.tiles(spec)
        link_s = terms.shared_link_seconds(spec, np.add.reduceat(link, self.starts))
        host_s = terms.host_bound_seconds(spec, np.add.reduceat(self.linear[:, FEATURES.index("host_s")], self.starts))
        return np.maximum(np.maximum(np.maximum.reduceat(stage_s, self.starts), link_s), host_s)

    def pipeline_of_stage(self) -> np.ndarray:
        """The pipeline each row belongs to."""
        return np.repeat(np.arange(len(self.starts)), np.diff(np.append(self.starts, len(self.linear))))

    def streamed_positions(self, pipelines: np.ndarray) -> np.ndarray:
        """The output-position counts of the layers that stream in the pipelines selected by the mask ``pipelines``."""
        rows = pipelines[self.pipeline_of_stage()]
        return self.positions[self.streamed[rows].sum(axis=0) > 0]


def stage_table(pipelines: Iterable[tuple[OpGraph, Sequence[int], int]], spec: EdgeTpuSpec) -> StageTable:
    """:class:`StageTable` of ``(graph, stage map, number of stages)`` pipelines (cache and host constants from ``spec``)."""
    rows: list[SegmentTerms] = []
    starts = []
    for graph, stages, k in pipelines:
        starts.append(len(rows))
        rows += [segment_terms(graph, seg, spec) for seg in segment_interfaces(graph, stages, k)]
    positions = sorted({p for r in rows for p in r.streamed})
    col = {p: i for i, p in enumerate(positions)}
    streamed = np.zeros((len(rows), len(positions)))
    for i, r in enumerate(rows):
        for p, nbytes in r.streamed.items():
            streamed[i, col[p]] = nbytes
    return StageTable(
        np.array([r.linear for r in rows]).reshape(len(rows), len(FEATURES)),
        streamed,
        np.array(positions, dtype=int),
        np.array([r.io_bytes for r in rows]),
        np.array(starts),
    )
