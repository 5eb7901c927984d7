"""Fit the USB Edge TPU device model (hardware/spec.py) to a named subset of the public measurements and
report every reference figure, fitted or not.

Sources (``shared/reference/public_measurements``; see tools/calibration_data.py): the layer sweeps of
Villarrubia et al. (conv5 on 1 TPU, on the compiler's 2- and 4-segment splits, fc4 on 1 TPU; times and the
compiler's per-segment on-chip / off-chip MiB), Coral's published single-TPU latencies (USB 3) and the x86 +
USB 3 column of pycoral's reference CSVs.

Fitted subset (named; everything else is held out and only predicted):

* conv5 single TPU, F in {52, 102, ..., 702} and the cache edges 442, 452, 512, 522, 632, 642 (19 figures);
* fc4 single TPU, N in {220, 420, ..., 2620} and the cache edges 1580, 1620, 1980, 2020 (15 figures);
* Coral: MobileNet v1, MobileNet v2, Inception v3 (299), ResNet-50 v1 (299), VGG16, DenseNet-121 (6 figures).

Held out: every conv5 2- and 4-segment row, the other conv5 / fc4 rows, Coral's ResNet-50 v2, ResNet-152 v2,
VGG19, Inception-ResNet v2 (when their zoo files exist), the x86-csv MobileNet v1 / v2.

Free constants, each physical, none per model:

* ``cache_bytes``, ``cache_io_share``: fitted to the compiler's memory columns only (every sweep segment; a
  grid, scored by the segments whose on- and off-chip MiB are both within 1 %);
* ``efficiency`` {conv, depthwise}, ``elementwise_s_per_byte``, ``t_invoke_s``, ``io_bytes_per_s``,
  ``stream_bytes_per_s`` (least squares on w * log(predicted / measured), w = 1 for the ImageNet figures and
  0.5 for the many sweep rows) and ``stream_tile_positions`` (an integer whose effect is a step function: the
  fit is profiled over every distinct tile count pattern and the best one kept).

Fixed, not fitted: ``peak_macs_per_s`` (4 TOPS), ``t_op_s`` (0), the host-CPU constants (a documented
assumption; they touch only the float QUANTIZE / DEQUANTIZE host ops of the sweeps) and
``shared_link_bytes_per_s`` (tested separately on the 2-/4-segment rows, which the fit does not see: the
fitted spec keeps one shared controller only if it predicts those rows as well as separate links, at the
smallest 50 MB/s step that the rows' own aggregate traffic does not refute).

"Within X %" means |predicted / measured - 1| <= X / 100.

Every prediction goes through the reference (``hardware.stage_costs`` + ``pipeline_period_ms`` on the real
OpGraphs: hand-built sweep models, placed; the zoo's ``.tflite`` files). A pipelined figure is the wall time
of 100 requests / 100, so it is compared with ``period + latency / 100``. The fit uses linear per-stage
features of the same formula (checked equal to the reference on every figure).

    python -m tools.calibrate --no-fit            # evaluate the current USB preset (seconds; writes nothing
                                                  # unless --out DIR is given)
    python -m tools.calibrate --loo               # fit + leave-one-out; writes results/calibration.csv,
                                                  # results/calibration.md, results/usb_fitted.json
    python -m tools.calibrate --check-tf          # also build two sweep models through TF and compare the OpGraphs
    python -m tools.calibrate --build-missing     # build missing zoo files (tools/build_zoo.py, minutes each)
"""

from __future__ import annotations

import argparse
import csv
import datetime
import itertools
import math
import os
import platform
import shlex
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
from hardware import USB, EdgeTpuSpec
from hardware.cost import (
    device_param_bytes,
    latency_ms,
    link_bytes,
    pipeline_period_ms,
    stage_costs,
)
from hardware.fit import segment_terms
from hardware.placement import placed
from tflite_io import OpGraph, read, segment_interfaces
from tools import calibration_data as cd

TOOLS = Path(__file__).resolve().parent
ROOT = TOOLS.parent

MiB = cd.MiB
SWEEP_WEIGHT = 0.5
#: Free time constants, fitted in log space: (label, getter, setter)
TIME_PARAMS = (
    "efficiency conv",
    "efficiency depthwise",
    "elementwise_s_per_byte",
    "t_invoke_s",
    "io_bytes_per_s",
    "stream_bytes_per_s",
)
_LOG_BOUNDS = (np.log([1e-3, 1e-4, 1e-14, 1e-6, 1e6, 1e6]), np.log([1.0, 1.0, 1e-7, 1e-2, 1e10, 1e10]))
TILE_RANGE = (128, 16384)  # stream_tile_positions searched (output positions of one spatial tile)
SHARED_LINKS = (0.0, 2e8, 3e8, 4e8, 4.5e8, 5e8)
LINK_STEP = 5e7  # a shared link in the fitted spec: the implied aggregate rate rounded up to this


# ---------------------------------------------------------------------------------------------------------
# Figures


@dataclass
class Figure:
    group: str
    name: str
    segments: int
    fitted: bool
    measured_ms: float
    graph: OpGraph
    stages: tuple[int, ...]
    source: str
    row: cd.SweepRow | None = None
    zoo: cd.ZooFigure | None = None
    predicted_ms: float = float("nan")
    costs: tuple = ()

    @property
    def ratio(self) -> float:
        return self.predicted_ms / self.measured_ms

    @property
    def weight(self) -> float:
        return SWEEP_WEIGHT if self.row is not None else 1.0


def load_figures(ref: Path, zoo_dir: Path) -> tuple[list[Figure], list[str]]:
    """Every reference figure with its graph and stage map; notes on the ones that could not be predicted."""
    figs: list[Figure] = []
    graphs: dict[tuple[str, int], OpGraph] = {}
    bad_macs = []
    for r in cd.load_sweeps(ref):
        g = graphs.get((r.kind, r.n)) or graphs.setdefault((r.kind, r.n), cd.sweep_graph(r.kind, r.n))
        macs = sum(op.macs for op in g.ops if op.op_type in ("CONV_2D", "FULLY_CONNECTED"))
        if macs != r.macs:
            extra_channel = r.kind == "conv5" and r.macs - macs == 5 * 64 * 64 * 9 * r.n
            bad_macs.append((cd.SWEEP_FILES[(r.kind, r.segments)], r.macs / macs - 1, extra_channel))
        src = f"Villarrubia et al., {cd.SWEEP_FILES[(r.kind, r.segments)]}"
        figs.append(
            Figure(
                r.group, r.name, r.segments, cd.is_fitted_sweep(r), r.ms, g, cd.stage_map(g, r.kind, r.segments), src, row=r
            )
        )
    notes = []
    for fname in sorted({m[0] for m in bad_macs}):
        d = [m[1] for m in bad_macs if m[0] == fname]
        why = (
            ": on every such row exactly 5 x 64x64 x 9 x F more, as if each conv had one more input channel "
            "(the bias counted as a MAC)"
            if all(m[2] for m in bad_macs if m[0] == fname)
            else ""
        )
        notes.append(
            f"{fname}: its '# MACs' column differs from the graph's conv MACs on {len(d)} rows by "
            f"{min(d):+.2%}..{max(d):+.2%}{why}; the layer shapes, the memory columns and the single-TPU "
            f"file agree with the graph"
        )
    same = [f for f in cd.SWEEP_FILES.values() if f not in {m[0] for m in bad_macs}]
    notes.append(f"'# MACs' column equals the graph's conv/FC MACs on every row of {', '.join(same)}")
    zoo_graphs: dict[str, OpGraph] = {}
    for z in cd.ZOO_FIGURES:
        path = zoo_dir / z.zoo_file
        if not path.is_file():
            notes.append(
                f"{z.label} ({z.ms} ms, {z.source}): {path} missing, not predicted "
                f"(build it: tools/calibrate.py --build-missing, or tools/build_zoo.py)"
            )
            continue
        g = zoo_graphs.get(z.zoo_file) or zoo_graphs.setdefault(z.zoo_file, placed(read(path)))
        group = "ImageNet, Coral" if z.source.startswith("coral.ai") else "ImageNet, x86 csv"
        figs.append(Figure(group, z.label, 1, z.fitted, z.ms, g, (0,) * g.num_ops, z.source, zoo=z))
    notes += [f"not predicted: {s}" for s in cd.NOT_PREDICTED]
    return figs, notes


def build_missing(zoo_dir: Path) -> None:
    import build_zoo

    for z in cd.ZOO_FIGURES:
        if not (zoo_dir / z.zoo_file).is_file():
            stem = z.zoo_file.removesuffix("_int8.tflite")
            name = stem if stem.endswith(f"_{z.size}") else f"{stem}_{z.size}"
            entry = build_zoo.ZooEntry(name, z.app, z.size)
            assert entry.filename == z.zoo_file, (entry.filename, z.zoo_file)
            print(f"building {z.zoo_file} ...", file=sys.stderr, flush=True)
            build_zoo.build(entry, zoo_dir)


# ---------------------------------------------------------------------------------------------------------
# The reference prediction


def figure_ms(costs: Sequence, segments: int, spec: EdgeTpuSpec) -> float:
    """One TPU: the latency; a pipeline: the wall time of 100 requests / 100 = period + latency / 100."""
    if segments == 1:
        return latency_ms(costs)
    return pipeline_period_ms(costs, spec) + latency_ms(costs) / 100


def predict_reference(figs: Sequence[Figure], spec: EdgeTpuSpec) -> None:
    for f in figs:
        f.costs = stage_costs(f.graph, f.stages, f.segments, spec)
        f.predicted_ms = figure_ms(f.costs, f.segments, spec)


# ---------------------------------------------------------------------------------------------------------
# Linear features of the same formula, for a fast fit (cache constants fixed)


@dataclass
class Features:
    """Per stage (rows) of every figure: [invokes, conv s at efficiency 1, depthwise s at efficiency 1,
    element-wise output bytes, host-link bytes (In + Out + host hand-offs), fixed s (host compute, t_op)],
    streamed bytes per distinct output-position count, In + Out; and each figure's stage range."""

    lin: np.ndarray
    streamed: np.ndarray
    positions: np.ndarray
    link: np.ndarray
    starts: np.ndarray
    segments: np.ndarray
    measured: np.ndarray
    weights: np.ndarray


#: hardware.fit.FEATURES columns in this fit's order: invokes, conv s, depthwise s, element-wise bytes, link bytes,
#: fixed s (host compute, t_op); the streamed column is kept apart, by output-position count.
_LINEAR_COLUMNS = [0, 1, 2, 3, 4, 6]


def stage_features(graph: OpGraph, stages: Sequence[int], k: int, spec: EdgeTpuSpec) -> list[tuple]:
    """Per stage: the linear terms in this fit's column order (:class:`Features`), streamed bytes by
    output-position count, and In + Out (from :func:`hardware.fit.segment_terms`)."""
    rows = []
    for seg in segment_interfaces(graph, stages, k):
        t = segment_terms(graph, seg, spec)
        rows.append((t.linear[_LINEAR_COLUMNS], t.streamed, t.io_bytes))
    return rows


def build_features(figs: Sequence[Figure], spec: EdgeTpuSpec) -> Features:
    per_fig = [stage_features(f.graph, f.stages, f.segments, spec) for f in figs]
    positions = sorted({p for rows in per_fig for _, s, _ in rows for p in s})
    col = {p: i for i, p in enumerate(positions)}
    lin: list[np.ndarray] = []
    streamed, link, starts = [], [], []
    for rows in per_fig:
        starts.append(len(lin))
        for lin_s, s, io in rows:
            lin.append(lin_s)
            v = np.zeros(len(positions))
            for p, b in s.items():
                v[col[p]] = b
            streamed.append(v)
            link.append(io)
    return Features(
        np.array(lin),
        np.array(streamed).reshape(len(lin), len(positions)),
        np.array(positions, float),
        np.array(link, float),
        np.array(starts),
        np.array([f.segments for f in figs]),
        np.array([f.measured_ms for f in figs]),
        np.array([f.weight for f in figs]),
    )


def params_of(spec: EdgeTpuSpec) -> np.ndarray:
    return np.log(
        [
            spec.efficiency["conv"],
            spec.efficiency["depthwise"],
            spec.elementwise_s_per_byte,
            spec.t_invoke_s,
            spec.io_bytes_per_s,
            spec.stream_bytes_per_s,
        ]
    )


def spec_of(x: np.ndarray, tile: int, base: EdgeTpuSpec) -> EdgeTpuSpec:
    e = np.exp(x)
    return base.with_(
        efficiency={"conv": float(e[0]), "depthwise": float(e[1])},
        elementwise_s_per_byte=float(e[2]),
        t_invoke_s=float(e[3]),
        io_bytes_per_s=float(e[4]),
        stream_bytes_per_s=float(e[5]),
        stream_tile_positions=int(tile),
    )


def tiles_of(positions: np.ndarray, tile: float) -> np.ndarray:
    return np.maximum(1.0, np.ceil(positions / tile))


def fast_ms(fe: Features, x: np.ndarray, tiles: np.ndarray, shared: float) -> np.ndarray:
    """Predicted ms of every figure (the reference formula on the features)."""
    e = np.exp(x)
    coef = np.array([e[3], 1 / e[0], 1 / e[1], e[2], 1 / e[4], 1.0])
    t = fe.lin @ coef + fe.streamed @ tiles / e[5]
    lat = np.add.reduceat(t, fe.starts)
    period = np.maximum.reduceat(t, fe.starts)
    if shared > 0:
        period = np.maximum(period, np.add.reduceat(fe.link, fe.starts) / shared)
    return np.where(fe.segments == 1, lat, period + lat / 100) * 1e3


def tile_patterns(positions: np.ndarray, lo: int, hi: int) -> list[tuple[int, int]]:
    """Integer tile ranges [a, b] over [lo, hi] within which ceil(p / tile) is constant for every p."""
    cuts = {lo, hi + 1}
    for p in positions.astype(int):
        for m in range(1, p + 1):
            c = -(-p // m)  # smallest tile giving m tiles
            if c < lo:
                break
            if c <= hi:
                cuts.add(c)
    edges = sorted(cuts)
    return [(a, b - 1) for a, b in itertools.pairwise(edges)]


@dataclass
class FitResult:
    x: np.ndarray
    tile_range: tuple[int, int]
    tile: int
    cost: float
    patterns: int
    evaluations: int = 0
    by_pattern: list = field(default_factory=list)


def fit_time(fe: Features, mask: np.ndarray, x0: np.ndarray, preset_tile: int, shared: float) -> FitResult:
    """Least squares on w * log(pred / measured) over the figures in ``mask``, profiled over tile patterns."""
    from scipy.optimize import least_squares

    used = np.flatnonzero(np.add.reduceat((fe.streamed > 0).any(axis=1).astype(int), fe.starts) > 0)
    used = used[mask[used]]
    stage_fig = np.repeat(np.arange(len(fe.starts)), np.diff(np.append(fe.starts, len(fe.lin))))
    cols = np.flatnonzero(fe.streamed[np.isin(stage_fig, used)].sum(axis=0) > 0)
    patterns = tile_patterns(fe.positions[cols], *TILE_RANGE) if len(cols) else [TILE_RANGE]
    meas, w = fe.measured[mask], fe.weights[mask]
    best = None
    results = []
    evals = 0
    x0 = np.clip(x0, _LOG_BOUNDS[0] + 1e-9, _LOG_BOUNDS[1] - 1e-9)
    for a, b in patterns:
        tiles = tiles_of(fe.positions, a)

        def res(x, tiles=tiles):
            return w * np.log(fast_ms(fe, x, tiles, shared)[mask] / meas)

        r = least_squares(res, x0, bounds=_LOG_BOUNDS, method="trf", xtol=1e-10, ftol=1e-12)
        evals += r.nfev
        results.append(((a, b), float(2 * r.cost)))
        if best is None or r.cost < best[1].cost - 1e-12:
            best = ((a, b), r)
    assert best is not None, "patterns is never empty"
    (a, b), r = best
    tile = preset_tile if a <= preset_tile <= b else round(math.sqrt(a * b))
    return FitResult(r.x, (a, b), tile, float(2 * r.cost), len(patterns), evals, results)


# ---------------------------------------------------------------------------------------------------------
# Cache constants from the memory columns


@dataclass
class Segment:
    fig: Figure
    index: int
    io: float
    cum: np.ndarray  # cumulative device bytes of the segment's layers, execution order
    on_mib: float
    off_mib: float


def memory_segments(figs: Sequence[Figure]) -> list[Segment]:
    out = []
    for f in figs:
        if f.row is None:
            continue
        for seg in segment_interfaces(f.graph, f.stages, f.segments):
            sizes, seen = [], set()
            for v in sorted(seg.ops):
                for buf, nb in device_param_bytes(f.graph, f.graph.ops[v]).items():
                    if buf not in seen and nb:
                        seen.add(buf)
                        sizes.append(nb)
            io = sum(link_bytes(f.graph, t, True) for t in seg.inputs) + sum(
                link_bytes(f.graph, t, False) for t in seg.outputs
            )
            out.append(
                Segment(
                    f,
                    seg.index,
                    float(io),
                    np.cumsum(sizes, dtype=float),
                    f.row.on_chip_mib[seg.index],
                    f.row.off_chip_mib[seg.index],
                )
            )
    return out


def within(pred: np.ndarray, meas: np.ndarray | float, tol: float) -> np.ndarray:
    """|pred - meas| <= tol * meas, with half a unit of the compiler's last printed digit (0.0005 MiB) of slack."""
    return np.abs(pred - meas) <= tol * meas + 0.0005


def memory_match(segs: Sequence[Segment], c0: np.ndarray, alpha: np.ndarray, tol: float) -> np.ndarray:
    """Segments (on and off both within ``tol``) matched, for every (c0, alpha) pair given (same shapes)."""
    count = np.zeros(np.broadcast(c0, alpha).shape, dtype=int)
    for s in segs:
        usable = np.maximum(0.0, c0 - alpha * s.io)
        idx = np.searchsorted(s.cum, usable, side="right")  # layers of the prefix that fits
        on = np.where(idx > 0, s.cum[np.maximum(idx - 1, 0)], 0.0) / MiB
        off = s.cum[-1] / MiB - on
        count += within(on, s.on_mib, tol) & within(off, s.off_mib, tol)
    return count


def fit_cache(segs: Sequence[Segment], preset: EdgeTpuSpec) -> dict:
    c0_axis = np.round(np.arange(7.50, 8.0001, 0.005), 3)
    a_axis = np.round(np.arange(0.15, 0.5001, 0.005), 3)
    C, A = np.meshgrid(c0_axis * MiB, a_axis, indexing="ij")
    n1 = memory_match(segs, C, A, 0.01)
    n10 = memory_match(segs, C, A, 0.10)
    best = n1.max()
    ties = np.argwhere(n1 == best)
    best10 = max(n10[i, j] for i, j in ties)
    ties = np.array([(i, j) for i, j in ties if n10[i, j] == best10])
    pc, pa = preset.cache_bytes / MiB, preset.cache_io_share
    in_ties = [(i, j) for i, j in ties if abs(c0_axis[i] - pc) < 0.0026 and abs(a_axis[j] - pa) < 0.0026]
    if in_ties:
        c0, alpha, why = pc, pa, "the preset lies on the plateau of best grid points: kept"
    else:
        ci, aj = ties.mean(axis=0)
        i, j = min(ties, key=lambda t: (t[0] - ci) ** 2 + (t[1] - aj) ** 2)
        c0, alpha, why = float(c0_axis[i]), float(a_axis[j]), "centre of the plateau of best grid points"
    return {
        "cache_mib": c0,
        "share": alpha,
        "n1": int(best),
        "n10": int(best10),
        "n": len(segs),
        "c0_range": (float(c0_axis[ties[:, 0].min()]), float(c0_axis[ties[:, 0].max()])),
        "a_range": (float(a_axis[ties[:, 1].min()]), float(a_axis[ties[:, 1].max()])),
        "why": why,
        "grid": f"C0 {c0_axis[0]}..{c0_axis[-1]} MiB step 0.005, share {a_axis[0]}..{a_axis[-1]} step 0.005",
    }


# ---------------------------------------------------------------------------------------------------------
# Reports


def md_table(header: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(c) for c in r) + " |" for r in rows]
    return "\n".join(lines)


def log_err(q: np.ndarray | float) -> np.ndarray:
    return np.abs(np.log(q))


def rms_ratio(q: np.ndarray) -> str:
    """exp(rms |log ratio|), as text."""
    return f"{math.exp(np.sqrt(np.mean(np.log(q) ** 2))):.3f}"


def ok(q: np.ndarray | float, tol: float) -> np.ndarray:
    """Within ``tol`` of the measured figure: |predicted / measured - 1| <= tol."""
    return np.abs(np.asarray(q) - 1) <= tol + 1e-12


def summary_rows(figs: Sequence[Figure]) -> list[list[object]]:
    order = []
    for f in figs:
        key = (f.group, "fitted" if f.fitted else "held out")
        if key not in order:
            order.append(key)
    rows = []
    for g, role in order:
        q = np.array([f.ratio for f in figs if f.group == g and ("fitted" if f.fitted else "held out") == role])
        rows.append(
            [
                g,
                role,
                len(q),
                f"{q.min():.3f}",
                f"{q.max():.3f}",
                rms_ratio(q),
                int(ok(q, 0.15).sum()),
                int(ok(q, 0.30).sum()),
            ]
        )
    for role, sel in (("all fitted", True), ("all held out", False)):
        q = np.array([f.ratio for f in figs if f.fitted == sel])
        rows.append(
            [
                f"**{role}**",
                "",
                len(q),
                f"{q.min():.3f}",
                f"{q.max():.3f}",
                rms_ratio(q),
                int(ok(q, 0.15).sum()),
                int(ok(q, 0.30).sum()),
            ]
        )
    return rows


SUMMARY_HEADER = ("group", "role", "n", "min ratio", "max ratio", "rms ratio", "within 15%", "within 30%")


def compiler_size(nbytes: float) -> str:
    """A size as edgetpu_compiler prints it (``6.86MiB``, ``320.00KiB``, ``0.00B``)."""
    for unit, scale in (("MiB", MiB), ("KiB", 2**10)):
        if nbytes >= scale:
            return f"{nbytes / scale:.2f}{unit}"
    return f"{nbytes:.2f}B"


def sign_table(figs: Sequence[Figure]) -> tuple[dict[int, tuple[int, int]], list[list[object]]]:
    single = {f.row.n: f for f in figs if f.row is not None and f.row.kind == "conv5" and f.segments == 1}
    counts: dict[int, list[int]] = {}
    wrong = []
    for f in figs:
        if f.row is None or f.segments == 1:
            continue
        s = single[f.row.n]
        ms, ps = np.sign(f.measured_ms - s.measured_ms), np.sign(f.predicted_ms - s.predicted_ms)
        c = counts.setdefault(f.segments, [0, 0])
        c[0] += int(ms == ps)
        c[1] += 1
        if ms != ps:
            wrong.append(
                [
                    f.segments,
                    f.row.n,
                    f"{f.measured_ms:.1f}",
                    f"{s.measured_ms:.1f}",
                    f"{f.measured_ms / s.measured_ms:.3f}",
                    f"{f.predicted_ms:.1f}",
                    f"{s.predicted_ms:.1f}",
                    f"{f.predicted_ms / s.predicted_ms:.3f}",
                ]
            )
    return {k: (v[0], v[1]) for k, v in counts.items()}, wrong


def implied_link_rate(figs: Sequence[Figure]) -> tuple[float, Figure]:
    """The largest aggregate host-link traffic a pipelined row implies: the bytes all its segments move per
    request (sum of In + Out) over the measured time; one shared controller slower than that cannot have
    produced the row."""
    rates = []
    for f in figs:
        if f.segments > 1:
            moved = sum(c.in_bytes + c.out_bytes for c in stage_costs(f.graph, f.stages, f.segments, USB))
            rates.append((moved / (f.measured_ms * 1e-3), f))
    return max(rates, key=lambda r: r[0])


def shared_link_rows(figs: Sequence[Figure], spec: EdgeTpuSpec) -> tuple[list[list[object]], str]:
    """Each host-link variant on the 2-/4-segment rows, and the largest aggregate host traffic a row implies."""
    multi = [f for f in figs if f.segments > 1]
    rate, top = implied_link_rate(figs)
    note = (
        f"Largest aggregate host-link traffic a row implies (bytes all its segments move per request / "
        f"measured time): {rate / 1e6:.0f} MB/s ({top.name}, {top.measured_ms:.2f} ms); one shared link "
        f"slower than that is refuted by the row itself, whatever the model predicts."
    )
    single = {f.row.n: f for f in figs if f.row is not None and f.row.kind == "conv5" and f.segments == 1}
    rows = []
    for b in sorted(set(SHARED_LINKS) | {spec.shared_link_bytes_per_s}):
        s = spec.with_(shared_link_bytes_per_s=b)
        ratios: list[float] = []
        binds, sign = 0, 0
        for f in multi:
            costs = stage_costs(f.graph, f.stages, f.segments, s)
            p = figure_ms(costs, f.segments, s)
            binds += pipeline_period_ms(costs, s) > max(c.ms for c in costs) + 1e-12
            ratios.append(p / f.measured_ms)
            assert f.row is not None, "every multi-segment figure is a sweep row"
            one = single[f.row.n]
            sign += np.sign(f.measured_ms - one.measured_ms) == np.sign(p - one.predicted_ms)
        q = np.array(ratios)
        le = log_err(q)
        by_k = {k: np.array([x for x, f in zip(q, multi) if f.segments == k]) for k in (2, 4)}
        label = f"shared, {b / 1e6:.0f} MB/s" if b else "separate links"
        if b < rate and b:
            label += " (refuted by the data)"
        if b == spec.shared_link_bytes_per_s:
            label = f"**{label} (this spec)**"
        rows.append(
            [
                label,
                f"{np.sqrt(np.mean(le**2)):.4f}",
                f"{math.exp(le.max()):.3f}",
                int(ok(q, 0.15).sum()),
                int(ok(q, 0.30).sum()),
                f"{np.sqrt(np.mean(np.log(by_k[2]) ** 2)):.4f}",
                f"{np.sqrt(np.mean(np.log(by_k[4]) ** 2)):.4f}",
                int(binds),
                int(sign),
                len(q),
            ]
        )
    return rows, note


SHARED_HEADER = (
    "host link",
    "rms log error",
    "worst ratio",
    "within 15%",
    "within 30%",
    "rms log 2-seg",
    "rms log 4-seg",
    "rows where the link binds",
    "sign right",
    "rows",
)


def spec_rows(spec: EdgeTpuSpec, preset: EdgeTpuSpec, how: dict[str, str]) -> list[list[object]]:
    items: list[tuple[str, float | str, float | str, str]] = [
        ("efficiency conv", spec.efficiency["conv"], preset.efficiency["conv"], ""),
        ("efficiency depthwise", spec.efficiency["depthwise"], preset.efficiency["depthwise"], ""),
        ("elementwise_s_per_byte", spec.elementwise_s_per_byte, preset.elementwise_s_per_byte, "s/B"),
        ("t_invoke_s", spec.t_invoke_s, preset.t_invoke_s, "s"),
        ("io_bytes_per_s", spec.io_bytes_per_s, preset.io_bytes_per_s, "B/s"),
        ("stream_bytes_per_s", spec.stream_bytes_per_s, preset.stream_bytes_per_s, "B/s"),
        ("stream_tile_positions", spec.stream_tile_positions, preset.stream_tile_positions, "positions"),
        ("cache_bytes", spec.cache_bytes, preset.cache_bytes, f"B ({spec.cache_bytes / MiB:.3f} MiB)"),
        ("cache_io_share", spec.cache_io_share, preset.cache_io_share, ""),
        ("shared_link_bytes_per_s", spec.shared_link_bytes_per_s, preset.shared_link_bytes_per_s, "B/s"),
        ("peak_macs_per_s", spec.peak_macs_per_s, preset.peak_macs_per_s, "MAC/s"),
        ("t_op_s", spec.t_op_s, preset.t_op_s, "s"),
        (
            "cpu_op_s / cpu_macs_per_s",
            f"{spec.cpu_op_s:g} / {spec.cpu_macs_per_s:g}",
            f"{preset.cpu_op_s:g} / {preset.cpu_macs_per_s:g}",
            "s / MAC/s",
        ),
    ]
    out: list[list[object]] = []
    for name, v, p, unit in items:
        if isinstance(v, str) or isinstance(p, str):  # the cpu_op_s / cpu_macs_per_s row: both preformatted
            out.append([name, v, p, "", unit, how.get(name, "fixed")])
            continue
        change = f"{v / p:.3f}x" if p else ("=" if v == p else "-")
        out.append([name, f"{v:.4g}", f"{p:.4g}", change, unit, how.get(name, "fixed")])
    return out


def sig3(x: float) -> float:
    return float(f"{x:.3g}")


def rounded_spec(x: np.ndarray, tile: int, cache: dict, shared: float) -> EdgeTpuSpec:
    e = np.exp(x)
    return USB.with_(
        name="usb",
        efficiency={"conv": sig3(e[0]), "depthwise": sig3(e[1])},
        elementwise_s_per_byte=sig3(e[2]),
        t_invoke_s=sig3(e[3]),
        io_bytes_per_s=sig3(e[4]),
        stream_bytes_per_s=sig3(e[5]),
        stream_tile_positions=int(tile),
        cache_bytes=int(cache["cache_mib"] * MiB),
        cache_io_share=float(cache["share"]),
        shared_link_bytes_per_s=shared,
    )


# ---------------------------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        description="Fit the USB Edge TPU device model to a named subset of the public "
        "measurements and report every reference figure (see the module docstring)."
    )
    p.add_argument("--no-fit", action="store_true", help="only evaluate the current USB preset (fast)")
    p.add_argument("--loo", action="store_true", help="leave-one-out over the fitted set (refit without each figure)")
    p.add_argument("--zoo", type=Path, default=ROOT / "zoo", help="directory of the zoo .tflite files (default zoo/)")
    p.add_argument("--ref", type=Path, default=cd.REFERENCE_DIR, help="the public_measurements directory")
    p.add_argument(
        "--out",
        type=Path,
        default=None,
        help="write calibration.csv, calibration.md (and usb_fitted.json when fitting) here "
        "(default results/; with --no-fit nothing is written unless --out is given)",
    )
    p.add_argument("--build-missing", action="store_true", help="build missing zoo files with tools/build_zoo.py")
    p.add_argument(
        "--check-tf",
        action="store_true",
        help="build conv5 F=70 and fc4 N=100 through TF's converter and compare with the hand-built graphs",
    )
    p.add_argument("--quiet", action="store_true", help="print only the summary tables")
    args = p.parse_args(argv)
    t_start = time.perf_counter()
    if args.build_missing:
        build_missing(args.zoo)
    out_dir = args.out if args.out is not None else (None if args.no_fit else ROOT / "results")
    figs, notes = load_figures(args.ref, args.zoo)
    preset = USB
    lines: list[str] = []

    def emit(text: str = "", always: bool = False) -> None:
        lines.append(text)
        if always or not args.quiet:
            print(text)

    if args.check_tf:
        import tempfile

        with tempfile.TemporaryDirectory() as tmp:
            for kind, n in (("conv5", 70), ("fc4", 100)):
                tf_g = cd.tf_graph(kind, n, Path(tmp))
                same = cd.graph_signature(tf_g) == cd.graph_signature(cd.sweep_graph(kind, n))
                notes.insert(
                    0,
                    f"--check-tf: {kind} n={n} built through TF's converter "
                    f"{'equals' if same else 'DIFFERS FROM'} the hand-built OpGraph (ops, shapes, bytes, "
                    f"MACs, buffers, placement)",
                )
                if not same:
                    print(f"calibrate: {notes[0]}", file=sys.stderr)
                    return 1

    segs = memory_segments(figs)
    how: dict[str, str] = {}
    fit_info = []
    loo_rows: list[list[str | int]] = []
    loo_summary = ""
    if args.no_fit:
        spec = preset
        title = "evaluation of the current USB preset (hardware/spec.py), no fit"
    else:
        cache = fit_cache(segs, preset)
        cache_spec = preset.with_(cache_bytes=int(cache["cache_mib"] * MiB), cache_io_share=cache["share"])
        fe = build_features(figs, cache_spec)
        mask = np.array([f.fitted for f in figs])
        rate, top = implied_link_rate(figs)
        shared = math.ceil(rate / LINK_STEP) * LINK_STEP if preset.shared_link_bytes_per_s else 0.0
        t0 = time.perf_counter()  # (the link does not touch the fitted one-TPU figures)
        fr = fit_time(fe, mask, params_of(preset), preset.stream_tile_positions, shared)
        t_fit = time.perf_counter() - t0
        spec = rounded_spec(fr.x, fr.tile, cache, shared)
        for k in TIME_PARAMS + ("stream_tile_positions",):
            how[k] = "fitted (times)"
        how["cache_bytes"] = how["cache_io_share"] = "fitted (memory columns)"
        how["shared_link_bytes_per_s"] = "tested on the 2-/4-seg rows (not fitted)"
        # Host link: one shared controller (the preset's assumption) is kept only if it predicts the 2-/4-seg rows
        # as well as separate links; its rate is the smallest LINK_STEP multiple the rows themselves do not refute.
        multi = np.array([f.segments > 1 for f in figs])
        fe_link = build_features(figs, spec)
        x_s, t_s = params_of(spec), tiles_of(fe_link.positions, spec.stream_tile_positions)
        err = {
            b: float(np.sqrt(np.mean(np.log(fast_ms(fe_link, x_s, t_s, b)[multi] / fe_link.measured[multi]) ** 2)))
            for b in (0.0, shared)
        }
        if shared and err[shared] > err[0.0] + 1e-12:
            spec = spec.with_(shared_link_bytes_per_s=0.0)
            link_why = "separate links: a shared link the rows allow predicts them worse"
        elif shared:
            link_why = (
                f"one shared controller kept (the preset's assumption): it predicts the 2-/4-seg rows exactly "
                f"as separate links do (rms log error {err[shared]:.4f} vs {err[0.0]:.4f}); "
                f"{shared / 1e6:.0f} MB/s = the {rate / 1e6:.0f} MB/s aggregate that {top.name} implies, "
                f"rounded up to {LINK_STEP / 1e6:.0f} MB/s (a slower shared link is refuted by that row)"
            )
        else:
            link_why = "separate links (as the preset)"
        # the fast features must give the reference's numbers
        fe_check = build_features(figs, spec)
        fast = fast_ms(
            fe_check, params_of(spec), tiles_of(fe_check.positions, spec.stream_tile_positions), spec.shared_link_bytes_per_s
        )
        predict_reference(figs, spec)
        ref_ms = np.array([f.predicted_ms for f in figs])
        dev = float(np.max(np.abs(fast / ref_ms - 1)))
        if dev > 1e-9:
            print(f"calibrate: the fit's features deviate from hardware.stage_costs by {dev:.2e}", file=sys.stderr)
            return 1
        fit_info = [
            (
                f"time fit: {int(mask.sum())} figures, {len(TIME_PARAMS)} continuous constants (least squares on "
                f"w*log(pred/meas), w = 1 ImageNet, {SWEEP_WEIGHT} sweep rows), stream_tile_positions profiled over "
                f"{fr.patterns} tile-count patterns in {TILE_RANGE[0]}..{TILE_RANGE[1]}; best pattern: tile in "
                f"[{fr.tile_range[0]}, {fr.tile_range[1]}] (same predictions for any value there; kept {fr.tile}); "
                f"sum of squared weighted log errors {fr.cost:.4f} (next best: "
                + ", ".join(f"tile {a}..{b}: {c:.4f}" for (a, b), c in sorted(fr.by_pattern, key=lambda x: x[1])[1:3])
                + f"); {fr.evaluations} evaluations in {t_fit:.1f} s"
            ),
            (
                f"cache fit: grid {cache['grid']}; best: {cache['n1']} of {cache['n']} segments within 1% "
                f"({cache['n10']} within 10%); the tied grid points span C0 {cache['c0_range'][0]}..{cache['c0_range'][1]} "
                f"MiB and share {cache['a_range'][0]}..{cache['a_range'][1]}; chosen C0 {cache['cache_mib']:.3f} MiB, "
                f"share {cache['share']} ({cache['why']})"
            ),
            f"host link: {link_why}",
            (
                f"the fit's linear features equal hardware.stage_costs + pipeline_period_ms on all {len(figs)} figures "
                f"(max relative deviation {dev:.1e}); constants rounded to 3 significant digits before every table"
            ),
        ]
        if args.loo:
            t0 = time.perf_counter()
            idx = np.flatnonzero(mask)
            for i in idx:
                m = mask.copy()
                m[i] = False
                r = fit_time(fe, m, fr.x, fr.tile, spec.shared_link_bytes_per_s)
                pred = fast_ms(fe, r.x, tiles_of(fe.positions, r.tile), spec.shared_link_bytes_per_s)[i]
                f = figs[i]
                loo_rows.append(
                    [
                        f.name,
                        f.group,
                        f"{f.measured_ms:.3f}",
                        f"{f.predicted_ms:.3f}",
                        f"{pred:.3f}",
                        f"{pred / f.measured_ms:.3f}",
                        r.tile,
                    ]
                )
            q = np.array([float(r[5]) for r in loo_rows])
            le = log_err(q)
            worst = loo_rows[int(np.argmax(le))]
            loo_summary = (
                f"LOO over {len(q)} fitted figures: rms ratio {math.exp(np.sqrt(np.mean(le**2))):.3f}, "
                f"worst {worst[0]} {worst[5]}, within 15%: {int(ok(q, 0.15).sum())}, within 30%: "
                f"{int(ok(q, 0.30).sum())}, within 50%: {int(ok(q, 0.50).sum())}; "
                f"{time.perf_counter() - t0:.1f} s"
            )
        title = "fit of the USB device model to the named subset"
    if args.no_fit:
        predict_reference(figs, spec)

    # --- tables
    emit(f"# Edge TPU device model calibration: {title}\n", always=True)
    emit(f"- date: {datetime.datetime.now().astimezone().isoformat(timespec='seconds')}")
    emit(
        f"- machine: {platform.node()} ({platform.platform()}, {platform.processor() or platform.machine()}, "
        f"Python {platform.python_version()})"
    )
    emit(f"- command: `python -m tools.calibrate {shlex.join(sys.argv[1:] if argv is None else argv)}`")
    emit(f"- reference data: {args.ref}; zoo: {args.zoo}")
    for line in fit_info:
        emit(f"- {line}")
    emit()
    emit("## Constants\n", always=True)
    emit(
        md_table(
            ("constant", "this spec", "preset (hardware/spec.py USB)", "this / preset", "unit", "how"),
            spec_rows(spec, preset, how),
        ),
        always=True,
    )
    emit()
    emit("## Summary per group (ratio = predicted / measured)\n", always=True)
    emit(md_table(SUMMARY_HEADER, summary_rows(figs)), always=True)
    emit()
    zoo_rows = []
    for f in figs:
        if f.zoo is None:
            continue
        c = f.costs[0]
        target = 1.25 if f.fitted else 1.35
        zoo_rows.append(
            [
                f.name,
                f.source,
                "fitted" if f.fitted else "held out",
                f"{f.graph.total_macs / 1e9:.2f}" if hasattr(f.graph, "total_macs") else "",
                f"{(c.on_chip_bytes + c.off_chip_bytes) / MiB:.2f}",
                f"{c.on_chip_bytes / MiB:.2f}",
                f"{c.off_chip_bytes / MiB:.2f}",
                f"{f.measured_ms:g}",
                f"{f.predicted_ms:.2f}",
                f"{f.ratio:.3f}",
                "yes" if ok(f.ratio, target - 1) else "**no**",
            ]
        )
    emit("## ImageNet figures (one USB TPU; target within 25% fitted, 35% held out)\n", always=True)
    emit(
        md_table(
            (
                "model",
                "source",
                "role",
                "GMACs",
                "param MiB (device)",
                "on-chip MiB",
                "off-chip MiB",
                "measured ms",
                "predicted ms",
                "ratio",
                "within target",
            ),
            zoo_rows,
        ),
        always=True,
    )
    emit()
    counts, wrong = sign_table(figs)
    emit("## Sign of (K-segment figure - one TPU) on the conv5 rows\n", always=True)
    emit(", ".join(f"{k} segments: right for {r} of {n}" for k, (r, n) in sorted(counts.items())), always=True)
    if wrong:
        emit("\nWrong:\n")
        emit(
            md_table(
                (
                    "K",
                    "F",
                    "measured K-seg",
                    "measured 1 TPU",
                    "measured ratio",
                    "predicted K-seg",
                    "predicted 1 TPU",
                    "predicted ratio",
                ),
                wrong,
            )
        )
    emit()
    emit("## Shared host link hypothesis (2- and 4-segment rows, all held out)\n", always=True)
    link_rows, link_note = shared_link_rows(figs, spec)
    emit(md_table(SHARED_HEADER, link_rows), always=True)
    emit(
        f"\n{link_note} This spec: shared_link_bytes_per_s = {spec.shared_link_bytes_per_s:g} "
        f"({'separate links' if not spec.shared_link_bytes_per_s else 'one shared host controller'}).",
        always=True,
    )
    emit()
    # memory columns
    mem_rows, n1, n10, nseg = [], 0, 0, 0
    for f in figs:
        if f.row is None:
            continue
        for c in f.costs:
            on, off = c.on_chip_bytes / MiB, c.off_chip_bytes / MiB
            mo, mf = f.row.on_chip_mib[c.index], f.row.off_chip_mib[c.index]
            ok1 = bool(within(np.array(on), mo, 0.01) & within(np.array(off), mf, 0.01))
            ok10 = bool(within(np.array(on), mo, 0.10) & within(np.array(off), mf, 0.10))
            n1 += ok1
            n10 += ok10
            nseg += 1
            mem_rows.append(
                [
                    f.name,
                    c.index,
                    f"{mo:.3f}",
                    f"{on:.3f}",
                    f"{mf:.3f}",
                    f"{off:.3f}",
                    f"{compiler_size(c.on_chip_bytes)} / {compiler_size(c.off_chip_bytes)}",
                    f"{(c.in_bytes + c.out_bytes) / MiB:.3f}",
                    "1%" if ok1 else ("10%" if ok10 else "**no**"),
                ]
            )
    emit("## Compiler memory columns: on-chip / off-chip MiB per segment, measured vs predicted\n", always=True)
    emit(
        f"{n1} of {nseg} segments have on- and off-chip MiB within 1% (+0.0005 MiB of print rounding), {n10} within "
        f"10% (cache {spec.cache_bytes / MiB:.3f} MiB, share {spec.cache_io_share}).",
        always=True,
    )
    bad = [r for r in mem_rows if r[-1] != "1%"]
    if bad:
        emit("\nSegments not within 1%:\n", always=True)
        emit(
            md_table(
                (
                    "figure",
                    "seg",
                    "on meas",
                    "on pred",
                    "off meas",
                    "off pred",
                    "compiler log (pred)",
                    "In+Out MiB",
                    "within",
                ),
                bad,
            ),
            always=True,
        )
    emit()
    if loo_rows:
        emit("## Leave-one-out over the fitted set\n", always=True)
        emit(loo_summary, always=True)
        emit()
        emit(md_table(("figure", "group", "measured ms", "fit ms", "LOO ms", "LOO ratio", "LOO tile"), loo_rows))
        emit()
    elif not args.no_fit:
        emit("(leave-one-out: run with --loo)\n")
    emit("## Every reference figure (predicted vs measured)\n")
    emit(
        md_table(
            ("group", "figure", "K", "role", "measured ms", "predicted ms", "ratio"),
            [
                [
                    f.group,
                    f.name,
                    f.segments,
                    "fitted" if f.fitted else "held out",
                    f"{f.measured_ms:.3f}",
                    f"{f.predicted_ms:.3f}",
                    f"{f.ratio:.3f}",
                ]
                for f in figs
            ],
        )
    )
    emit()
    emit("## Notes\n")
    for note in notes:
        emit(f"- {note}")
    emit()
    # full memory table only in the file
    lines.append("## Per-segment memory, every sweep segment (compiler log format for the prediction)\n")
    lines.append(
        md_table(
            ("figure", "seg", "on meas", "on pred", "off meas", "off pred", "compiler log (pred)", "In+Out MiB", "within"),
            mem_rows,
        )
    )
    runtime = time.perf_counter() - t_start
    at = next(i for i, line in enumerate(lines) if line.startswith("- command:")) + 1
    lines.insert(at, f"- runtime: {runtime:.1f} s")
    print(f"\n(runtime {runtime:.1f} s)")
    if out_dir is not None:
        out_dir.mkdir(parents=True, exist_ok=True)
        with (out_dir / "calibration.csv").open("w", newline="") as fh:
            w = csv.writer(fh)
            w.writerow(
                [
                    "group",
                    "name",
                    "K",
                    "role",
                    "measured_ms",
                    "predicted_ms",
                    "ratio",
                    "source",
                    "on_chip_mib_measured",
                    "on_chip_mib_predicted",
                    "off_chip_mib_measured",
                    "off_chip_mib_predicted",
                ]
            )
            for f in figs:
                mem = ["", "", "", ""]
                if f.row is not None:
                    mem = [
                        ";".join(f"{v:.4f}" for v in f.row.on_chip_mib),
                        ";".join(f"{c.on_chip_bytes / MiB:.4f}" for c in f.costs),
                        ";".join(f"{v:.4f}" for v in f.row.off_chip_mib),
                        ";".join(f"{c.off_chip_bytes / MiB:.4f}" for c in f.costs),
                    ]
                w.writerow(
                    [
                        f.group,
                        f.name,
                        f.segments,
                        "fitted" if f.fitted else "held_out",
                        f"{f.measured_ms:.4f}",
                        f"{f.predicted_ms:.4f}",
                        f"{f.ratio:.4f}",
                        f.source,
                        *mem,
                    ]
                )
        (out_dir / "calibration.md").write_text("\n".join(lines) + "\n")
        if not args.no_fit:
            (out_dir / "usb_fitted.json").write_text(spec.to_json())
        print(
            f"wrote {out_dir / 'calibration.csv'}, {out_dir / 'calibration.md'}"
            + ("" if args.no_fit else f", {out_dir / 'usb_fitted.json'}")
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
