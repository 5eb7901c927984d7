"""Fit the USB Edge TPU device model (hardware/spec.py) to a named subset of the public measurements and
report every reference figure, fitted or not.

Sources (``shared/reference/public_measurements``; see tools/calibration_data.py): the layer sweeps of
Villarrubia et al. (conv5 on 1 TPU, on the compiler's 2- and 4-segment splits, fc4 on 1 TPU; times and the
compiler's per-segment on-chip / off-chip MiB), Coral's published single-TPU latencies (USB 3) and the x86 +
USB 3 column of pycoral's reference CSVs.

Fitted subset (named; everything else is held out and only predicted):

* conv5 single TPU, F in {52, 102, ..., 702} and the cache edges 442, 452, 512, 522, 632, 642 (19 figures);
* fc4 single TPU, N in {220, 420, ..., 2620} and the cache edges 1580, 1620, 1980, 2020 (15 figures);
* Coral (desktop + USB 3): MobileNet v1, MobileNet v2, ResNet-50 v1 (299), VGG16, DenseNet-121, Inception v4
  (299) (6 figures); DeepLab v3 (513), the one figure with heavy host ops, fits the host's speed for them
  (``host_ref_ms``, :func:`usb_host_speed`).

Held out: every conv5 2- and 4-segment row, the other conv5 / fc4 rows, Coral's U-Net, Inception v1,
ResNet-50 v2, ResNet-152 v2, VGG19, Inception-ResNet v2 (when their zoo files exist), pycoral's x86 CSV rows.
Then the host presets (:mod:`tools.calibrate_hosts`: ``devboard``, ``rpi4``, ``rpi3``) are fitted on top of
this fit to their own columns, with leave-one-out; ``--loo`` writes them to ``results/presets_fitted.json``,
which ``hardware/spec.py``'s presets must equal (a test checks).

Free constants, each physical, none per model:

* ``cache_bytes``, ``cache_io_share``: fitted to the compiler's memory columns only (every sweep segment; a
  grid, scored by the segments whose on- and off-chip MiB are both within 1 %);
* the six linear constants of :mod:`hardware.fit` (``hardware.fit.FITTED``: ``t_invoke_s``, ``efficiency``
  {conv, depthwise}, ``elementwise_s_per_byte``, ``io_bytes_per_s``, ``stream_bytes_per_s``; least squares on
  w * log(predicted / measured) over log ``theta``, w = 1 for the ImageNet figures and 0.5 for the many sweep
  rows) and ``stream_tile_positions`` (an integer whose effect is a step function: the fit is profiled over
  every range of ``hardware.fit.tile_ranges`` in ``hardware.fit.TILE_RANGE`` and the best one kept).

Fixed, not fitted: ``peak_macs_per_s`` (4 TOPS), ``t_op_s`` (0), the host-op table (1 us per op and 1 G
elements/s, loosely the one-op times LiteRT measures here; it touches only the hand-built sweeps' float
QUANTIZE / DEQUANTIZE host ops: the zoo's host ops are timed) and
``shared_link_bytes_per_s`` (tested separately on the 2-/4-segment rows, which the fit does not see: the
fitted spec keeps one shared controller only if it predicts those rows as well as separate links, at the
smallest 50 MB/s step that the rows' own aggregate traffic does not refute).

"Within X %" means |predicted / measured - 1| <= X / 100.

Every reported prediction goes through the reference (``hardware.stage_costs`` + ``pipeline_period_ms`` on
the real OpGraphs: hand-built sweep models, placed; the zoo's ``.tflite`` files). A pipelined figure is the
wall time of 100 requests / 100, so it is compared with ``period + latency / 100``. The fit predicts with
hardware.fit's linear features (``hardware.fit.StageTable``: ``stage_features @ theta`` per stage), checked
equal to the reference on every figure. No constant is read off the spec here: the fitted ones go through
``hardware.fit.theta`` / ``with_theta``, the table of constants through ``hardware.fit.constants``, the
terms (cache, links, tiles) through ``hardware.terms``.

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
import json
import math
import os
import platform
import shlex
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
from hardware import USB, EdgeTpuSpec, terms
from hardware import fit as hw_fit
from hardware.cost import device_param_bytes, latency_ms, link_bytes, pipeline_period_ms, stage_costs
from hardware.host_time import cpu_only_seconds, localized, with_host_times
from hardware.placement import placed
from respect_pass.partition import REFERENCE_MODEL
from tflite_io import OpGraph, read, segment_interfaces
from tools import calibrate_hosts as hosts
from tools import calibration_data as cd

TOOLS = Path(__file__).resolve().parent
ROOT = TOOLS.parent

MiB = cd.MiB
SWEEP_WEIGHT = 0.5
#: Physical bounds of the fit in log theta (hardware.fit.theta[:6]: t_invoke_s, 1/eff conv, 1/eff depthwise,
#: elementwise_s_per_byte, 1/io_bytes_per_s, 1/stream_bytes_per_s): efficiencies 1e-3..1 (conv), 1e-4..1
#: (depthwise; 1 = the MAC array's peak, 4 TOPS), 1e-14..1e-7 s/B, 10 us..10 ms per invoke, and for both
#: links 1 MB/s up to USB 3's raw payload rate (5 Gbit/s after 8b/10b coding: 500 MB/s; a PCIe Gen2 x1 lane
#: has the same).
USB3_MAX_BYTES_PER_S = 5e8
THETA_BOUNDS = (
    np.log([1e-5, 1.0, 1.0, 1e-14, 1 / USB3_MAX_BYTES_PER_S, 1 / USB3_MAX_BYTES_PER_S]),
    np.log([1e-2, 1e3, 1e4, 1e-7, 1e-6, 1e-6]),
)
#: Activation link rates the identifiability profile fixes (B/s): the fit's own, and these.
IO_PROFILE = (5e7, 1e8, 1.5e8, 2e8, 3e8, 5e8)
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


def sweep_figures(ref: Path) -> tuple[list[Figure], list[tuple[str, float, bool]]]:
    """Every sweep row as a figure, and the rows whose '# MACs' column differs from the graph's conv / FC MACs
    (file, relative difference, whether it is exactly one more input channel per conv)."""
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
        stages = cd.stage_map(g, r.kind, r.segments)
        figs.append(Figure(r.group, r.name, r.segments, cd.is_fitted_sweep(r), r.ms, g, stages, src, row=r))
    return figs, bad_macs


def macs_notes(bad_macs: Sequence[tuple[str, float, bool]]) -> list[str]:
    """One note per sweep file on its '# MACs' column."""
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
    return notes


def zoo_graph(path: Path) -> OpGraph:
    """A zoo model as the CLI plans it: placed, its host ops timed by LiteRT on this machine (cached)."""
    return with_host_times(path, placed(read(path)), "measured")


def zoo_figures(zoo_dir: Path) -> tuple[list[Figure], list[str]]:
    """The ImageNet figures whose zoo file exists, and a note for each one missing."""
    figs, notes = [], []
    zoo_graphs: dict[str, OpGraph] = {}
    for z in cd.ZOO_FIGURES:
        path = zoo_dir / z.zoo_file
        if not path.is_file():
            notes.append(
                f"{z.label} ({z.ms} ms, {z.source}): {path} missing, not predicted "
                f"(build it: tools/calibrate.py --build-missing, or tools/build_zoo.py)"
            )
            continue
        g = zoo_graphs.get(z.zoo_file) or zoo_graphs.setdefault(z.zoo_file, zoo_graph(path))
        group = "ImageNet, Coral" if z.source.startswith("coral.ai") else "ImageNet, x86 csv"
        figs.append(Figure(group, z.label, 1, z.fitted, z.ms, g, (0,) * g.num_ops, z.source, zoo=z))
    return figs, notes


def load_figures(ref: Path, zoo_dir: Path) -> tuple[list[Figure], list[str]]:
    """Every reference figure with its graph and stage map; notes on the ones that could not be predicted."""
    sweeps, bad_macs = sweep_figures(ref)
    zoo, zoo_notes = zoo_figures(zoo_dir)
    notes = macs_notes(bad_macs) + zoo_notes + [f"not predicted: {s}" for s in cd.NOT_PREDICTED]
    return sweeps + zoo, notes


def build_missing(zoo_dir: Path) -> None:
    """Build every zoo file a figure (of any host) needs and the zoo lacks (tools/build_zoo.py)."""
    from tools import build_zoo

    by_file = {e.filename: e for e in build_zoo.BY_NAME.values()}
    for name in sorted(set(cd.MODEL_FILES.values())):
        if not (zoo_dir / name).is_file():
            print(f"building {name} ...", file=sys.stderr, flush=True)
            build_zoo.build(by_file[name], zoo_dir)


def check_tf(notes: list[str]) -> bool:
    """--check-tf: the two sweep models built through TF's converter equal the hand-built OpGraphs (a note)."""
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
                return False
    return True


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
# Fast predictions: hardware.fit's linear features of every stage of every figure (cache constants fixed)


@dataclass(frozen=True)
class Observed:
    """Every figure's stages as a :class:`hardware.fit.StageTable`, with its segments, measured ms and weight."""

    table: hw_fit.StageTable
    segments: np.ndarray
    measured: np.ndarray
    weights: np.ndarray


def observe(figs: Sequence[Figure], spec: EdgeTpuSpec) -> Observed:
    """:class:`Observed` of ``figs`` (cache and host constants from ``spec``)."""
    return Observed(
        hw_fit.stage_table(((f.graph, f.stages, f.segments) for f in figs), spec),
        np.array([f.segments for f in figs]),
        np.array([f.measured_ms for f in figs]),
        np.array([f.weight for f in figs]),
    )


def fast_ms(obs: Observed, stage_s: np.ndarray, spec: EdgeTpuSpec) -> np.ndarray:
    """Every figure's ms from its stage times (``spec``: the shared host link), as :func:`figure_ms`."""
    latency = obs.table.latency_seconds(stage_s)
    period = obs.table.period_seconds(stage_s, spec)
    return np.where(obs.segments == 1, latency, period + latency / 100) * 1e3


def spec_ms(obs: Observed, spec: EdgeTpuSpec) -> np.ndarray:
    """Every figure's ms under ``spec`` (whose cache and host constants built ``obs``)."""
    return fast_ms(obs, obs.table.stage_seconds(spec), spec)


# ---------------------------------------------------------------------------------------------------------
# The time fit: log theta by least squares, profiled over the tile ranges


@dataclass
class FitResult:
    u: np.ndarray  # log theta[:6]
    tile_range: tuple[int, int]
    tile: int
    cost: float
    patterns: int
    evaluations: int = 0
    by_pattern: list = field(default_factory=list)

    @property
    def theta(self) -> np.ndarray:
        return np.append(np.exp(self.u), 1.0)


def tile_spec(spec: EdgeTpuSpec, tile: int) -> EdgeTpuSpec:
    return spec.with_(stream_tile_positions=int(tile))


def fit_time(
    obs: Observed,
    mask: np.ndarray,
    u0: np.ndarray,
    prior_tile: int,
    spec: EdgeTpuSpec,
    bounds: tuple[np.ndarray, np.ndarray] = THETA_BOUNDS,
) -> FitResult:
    """Least squares on w * log(pred / measured) over the figures in ``mask``, in log theta, profiled over the
    tile ranges of the layers they stream (``spec``: the shared host link; the prior's tile is kept where
    it lies in the best range, else the range's geometric middle)."""
    from scipy.optimize import least_squares

    positions = obs.table.streamed_positions(mask)
    ranges = hw_fit.tile_ranges(positions) if len(positions) else [hw_fit.TILE_RANGE]
    meas, w = obs.measured[mask], obs.weights[mask]
    u0 = np.clip(u0, bounds[0] + 1e-9, bounds[1] - 1e-9)
    best, results, evals = None, [], 0
    for a, b in ranges:
        feats = obs.table.features(obs.table.tiles(tile_spec(spec, a)))

        def res(u: np.ndarray, feats: np.ndarray = feats) -> np.ndarray:
            return w * np.log(fast_ms(obs, feats @ np.append(np.exp(u), 1.0), spec)[mask] / meas)

        r = least_squares(res, u0, bounds=bounds, method="trf", xtol=1e-10, ftol=1e-12)
        evals += r.nfev
        results.append(((a, b), float(2 * r.cost)))
        if best is None or r.cost < best[1].cost - 1e-12:
            best = ((a, b), r)
    assert best is not None, "ranges is never empty"
    (a, b), r = best
    tile = prior_tile if a <= prior_tile <= b else round(math.sqrt(a * b))
    return FitResult(r.x, (a, b), tile, float(2 * r.cost), len(ranges), evals, results)


def predict_fit(obs: Observed, fr: FitResult, spec: EdgeTpuSpec) -> np.ndarray:
    """Every figure's ms under a fit's theta and tile (``spec``: the shared host link)."""
    return fast_ms(obs, obs.table.features(obs.table.tiles(tile_spec(spec, fr.tile))) @ fr.theta, spec)


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
            io = sum(link_bytes(f.graph, t, True) for t in seg.inputs)
            io += sum(link_bytes(f.graph, t, False) for t in seg.outputs)
            cum = np.cumsum(sizes, dtype=float)
            out.append(Segment(f, seg.index, float(io), cum, f.row.on_chip_mib[seg.index], f.row.off_chip_mib[seg.index]))
    return out


def within(pred: np.ndarray, meas: np.ndarray | float, tol: float) -> np.ndarray:
    """|pred - meas| <= tol * meas, with half a unit of the compiler's last printed digit (0.0005 MiB) of slack."""
    return np.abs(pred - meas) <= tol * meas + 0.0005


@dataclass(frozen=True)
class MemoryColumns:
    """Every sweep segment's link bytes, cumulative layer bytes (rows padded with inf), total MiB and measured MiB."""

    io: np.ndarray
    cum: np.ndarray
    total_mib: np.ndarray
    on_mib: np.ndarray
    off_mib: np.ndarray

    @classmethod
    def of(cls, segs: Sequence[Segment]) -> MemoryColumns:
        cum = np.full((len(segs), max(len(s.cum) for s in segs)), np.inf)
        for i, s in enumerate(segs):
            cum[i, : len(s.cum)] = s.cum
        return cls(
            np.array([s.io for s in segs]),
            cum,
            np.array([s.cum[-1] for s in segs]) / MiB,
            np.array([s.on_mib for s in segs]),
            np.array([s.off_mib for s in segs]),
        )

    def matches(self, spec: EdgeTpuSpec, tols: Sequence[float]) -> list[int]:
        """Per tolerance: the segments whose on- and off-chip MiB under ``spec``'s cache are both within it."""
        usable = terms.usable_cache_bytes(spec, self.io)
        fit = (self.cum <= usable[:, None]).sum(axis=1)  # layers of the prefix that fits
        rows = np.arange(len(self.io))
        on = np.where(fit > 0, self.cum[rows, np.maximum(fit - 1, 0)], 0.0) / MiB
        off = self.total_mib - on
        return [int((within(on, self.on_mib, t) & within(off, self.off_mib, t)).sum()) for t in tols]


def memory_grid(segs: Sequence[Segment], preset: EdgeTpuSpec) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The cache grid (MiB), the share grid and, per grid point, the segments matched within 1% and within 10%."""
    c0_axis = np.round(np.arange(7.50, 8.0001, 0.005), 3)
    a_axis = np.round(np.arange(0.15, 0.5001, 0.005), 3)
    columns = MemoryColumns.of(segs)
    counts = np.zeros((2, len(c0_axis), len(a_axis)), dtype=int)
    for i, c0 in enumerate(c0_axis):
        for j, a in enumerate(a_axis):
            # (a grid point's cache is not a whole number of bytes: kept as it is, this spec only scores the grid)
            counts[:, i, j] = columns.matches(preset.with_(cache_bytes=c0 * MiB, cache_io_share=a), (0.01, 0.10))
    return c0_axis, a_axis, counts


def fit_cache(segs: Sequence[Segment], preset: EdgeTpuSpec) -> dict:
    c0_axis, a_axis, (n1, n10) = memory_grid(segs, preset)
    best = n1.max()
    ties = np.argwhere(n1 == best)
    best10 = max(n10[i, j] for i, j in ties)
    ties = np.array([(i, j) for i, j in ties if n10[i, j] == best10])
    prior = hw_fit.constants(preset)
    pc, pa = prior["cache_bytes"] / MiB, prior["cache_io_share"]
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
# The shared host link


def implied_link_rate(figs: Sequence[Figure]) -> tuple[float, Figure]:
    """The largest aggregate host-link traffic a pipelined row implies: the bytes all its segments move per
    request (sum of In + Out) over the measured time; one shared controller slower than that cannot have
    produced the row."""
    rates = []
    for f in figs:
        if f.segments > 1:
            moved = sum(c.in_bytes + c.out_bytes for c in stage_costs(f.graph, f.stages, f.segments, USB))
            rates.append((terms.shared_link_rate(moved, f.measured_ms * 1e-3), f))
    return max(rates, key=lambda r: r[0])


def shared_link_rate(spec: EdgeTpuSpec) -> float:
    """The shared host controller's bandwidth of ``spec`` (0: separate links)."""
    return hw_fit.constants(spec)["shared_link_bytes_per_s"]


def choose_link(obs: Observed, spec: EdgeTpuSpec, shared: float, rate: float, top: Figure) -> tuple[EdgeTpuSpec, str]:
    """One shared controller (the preset's assumption) is kept only if it predicts the 2-/4-seg rows as well as
    separate links; its rate is the smallest LINK_STEP multiple the rows themselves do not refute."""
    multi = obs.segments > 1
    err = {}
    for b in (0.0, shared):
        q = spec_ms(obs, spec.with_(shared_link_bytes_per_s=b))[multi] / obs.measured[multi]
        err[b] = float(np.sqrt(np.mean(np.log(q) ** 2)))
    if shared and err[shared] > err[0.0] + 1e-12:
        return spec.with_(shared_link_bytes_per_s=0.0), "separate links: a shared link the rows allow predicts them worse"
    if shared:
        return spec, (
            f"one shared controller kept (the preset's assumption): it predicts the 2-/4-seg rows exactly "
            f"as separate links do (rms log error {err[shared]:.4f} vs {err[0.0]:.4f}); "
            f"{shared / 1e6:.0f} MB/s = the {rate / 1e6:.0f} MB/s aggregate that {top.name} implies, "
            f"rounded up to {LINK_STEP / 1e6:.0f} MB/s (a slower shared link is refuted by that row)"
        )
    return spec, "separate links (as the preset)"


# ---------------------------------------------------------------------------------------------------------
# The fit, step by step


@dataclass
class Fit:
    """What a fit found and how: the spec, the 'how' column of the constants, the header lines, the LOO."""

    spec: EdgeTpuSpec
    how: dict[str, str]
    info: list[str]
    loo_rows: list[list[str | int]] = field(default_factory=list)
    loo_summary: str = ""
    #: each fitted constant's (min, max) over the leave-one-out refits
    loo_spread: dict[str, tuple[float, float]] = field(default_factory=dict)
    #: the LOO prediction (ms) of each fitted figure, by name
    loo_ms: dict[str, float] = field(default_factory=dict)
    #: rows of the identifiability profile (the activation link rate fixed, the rest refitted)
    profile_rows: list[list[object]] = field(default_factory=list)
    profile_note: str = ""
    hosts: dict[str, Any] = field(default_factory=dict)
    #: figures that fixed the USB host's host_op_scale (no held-out prediction of their own)
    scale_rows: list[str] = field(default_factory=list)
    ref_ms: float = 0.0  # this machine's time for the reference workload


def fitted_spec(fr: FitResult, cache: dict, shared: float, preset: EdgeTpuSpec = USB) -> EdgeTpuSpec:
    """The preset with the fit's constants, rounded to 3 significant digits."""
    spec = hw_fit.rounded(hw_fit.with_theta(preset, fr.theta, name="usb"))
    return spec.with_(
        stream_tile_positions=int(fr.tile),
        cache_bytes=int(cache["cache_mib"] * MiB),
        cache_io_share=float(cache["share"]),
        shared_link_bytes_per_s=shared,
    )


def how_fitted() -> dict[str, str]:
    how = {k: "fitted (times)" for k in (*hw_fit.FITTED, "stream_tile_positions")}
    how["cache_bytes"] = how["cache_io_share"] = "fitted (memory columns)"
    how["shared_link_bytes_per_s"] = "tested on the 2-/4-seg rows (not fitted)"
    return how


def check_fast(obs: Observed, figs: Sequence[Figure], spec: EdgeTpuSpec) -> float:
    """Predict every figure with the reference; the largest relative deviation of the fast predictions from it."""
    fast = spec_ms(obs, spec)
    predict_reference(figs, spec)
    return float(np.max(np.abs(fast / np.array([f.predicted_ms for f in figs]) - 1)))


def time_fit_line(fr: FitResult, n: int, seconds: float) -> str:
    lo, hi = hw_fit.TILE_RANGE
    runners_up = sorted(fr.by_pattern, key=lambda x: x[1])[1:3]
    return (
        f"time fit: {n} figures, {len(hw_fit.FITTED)} continuous constants (least squares on "
        f"w*log(pred/meas), w = 1 ImageNet, {SWEEP_WEIGHT} sweep rows), stream_tile_positions profiled over "
        f"{fr.patterns} tile-count patterns in {lo}..{hi}; best pattern: tile in "
        f"[{fr.tile_range[0]}, {fr.tile_range[1]}] (same predictions for any value there; kept {fr.tile}); "
        f"sum of squared weighted log errors {fr.cost:.4f} (next best: "
        + ", ".join(f"tile {a}..{b}: {c:.4f}" for (a, b), c in runners_up)
        + f"); {fr.evaluations} evaluations in {seconds:.1f} s"
    )


def cache_fit_line(cache: dict) -> str:
    return (
        f"cache fit: grid {cache['grid']}; best: {cache['n1']} of {cache['n']} segments within 1% "
        f"({cache['n10']} within 10%); the tied grid points span C0 {cache['c0_range'][0]}..{cache['c0_range'][1]} "
        f"MiB and share {cache['a_range'][0]}..{cache['a_range'][1]}; chosen C0 {cache['cache_mib']:.3f} MiB, "
        f"share {cache['share']} ({cache['why']})"
    )


def loo(
    obs: Observed, figs: Sequence[Figure], mask: np.ndarray, fr: FitResult, spec: EdgeTpuSpec
) -> tuple[list, str, dict[str, tuple[float, float]]]:
    """Refit without each fitted figure in turn and predict it: the rows of the LOO table, its summary line and
    each fitted constant's (min, max) over the refits."""
    t0 = time.perf_counter()
    rows: list[list[str | int]] = []
    values: dict[str, list[float]] = {}
    for i in map(int, np.flatnonzero(mask)):
        m = mask.copy()
        m[i] = False
        r = fit_time(obs, m, fr.u, fr.tile, spec)
        refit = hw_fit.with_theta(spec, r.theta).with_(stream_tile_positions=int(r.tile))
        for name in (*hw_fit.FITTED, "stream_tile_positions"):
            values.setdefault(name, []).append(float(hw_fit.constants(refit)[name]))
        pred = predict_fit(obs, r, spec)[i]
        f = figs[i]
        ratio = f"{pred / f.measured_ms:.3f}"
        rows.append([f.name, f.group, f"{f.measured_ms:.3f}", f"{f.predicted_ms:.3f}", f"{pred:.3f}", ratio, r.tile])
    q = np.array([float(r[5]) for r in rows])
    le = log_err(q)
    worst = rows[int(np.argmax(le))]
    summary = (
        f"LOO over {len(q)} fitted figures: rms ratio {math.exp(np.sqrt(np.mean(le**2))):.3f}, "
        f"worst {worst[0]} {worst[5]}, within 15%: {int(ok(q, 0.15).sum())}, within 30%: "
        f"{int(ok(q, 0.30).sum())}, within 50%: {int(ok(q, 0.50).sum())}; "
        f"{time.perf_counter() - t0:.1f} s"
    )
    return rows, summary, {name: (min(v), max(v)) for name, v in values.items()}


def io_profile(obs: Observed, mask: np.ndarray, fr: FitResult, spec: EdgeTpuSpec) -> tuple[list[list[object]], str]:
    """Identifiability: the fit redone with the activation link rate fixed at each of :data:`IO_PROFILE` (the
    other constants refitted), with its cost beside the free fit's: how well the data tell the rates apart."""
    rows: list[list[object]] = []
    best = fr.cost
    for rate in sorted({*IO_PROFILE, round(1 / fr.theta[4])}):
        lo, hi = THETA_BOUNDS[0].copy(), THETA_BOUNDS[1].copy()
        lo[4], hi[4] = math.log(1 / rate) - 1e-9, math.log(1 / rate) + 1e-9
        r = fit_time(obs, mask, fr.u, fr.tile, spec, (lo, hi))
        c = hw_fit.constants(hw_fit.with_theta(spec, r.theta))
        rows.append(
            [
                f"{rate / 1e6:.0f}" + (" (free fit)" if abs(rate * fr.theta[4] - 1) < 1e-6 else ""),
                f"{r.cost:.4f}",
                f"{r.cost / best:.3f}",
                f"{c['efficiency conv']:.3g}",
                f"{c['efficiency depthwise']:.3g}",
                f"{c['t_invoke_s'] * 1e6:.0f}",
                f"{c['stream_bytes_per_s'] / 1e6:.0f}",
                r.tile,
            ]
        )
    near = [r[0] for r in rows if float(str(r[2])) <= 1.1]
    note = (
        f"fits within 10% of the free fit's cost: io {', '.join(map(str, near))} MB/s. The activation rate and "
        "the conv efficiency trade against each other on the sweep rows (every conv5 layer moves a 64x64xF "
        "activation); the rates the data cannot tell apart are listed, and the free fit (inside the physical "
        "bounds) is kept: no rate in that range is implausible for USB 3 (at most 500 MB/s), so there is no "
        "physical ground to prefer another."
    )
    return rows, note


def run_fit(figs: Sequence[Figure], preset: EdgeTpuSpec, with_loo: bool) -> Fit | None:
    """Cache from the memory columns, the time constants and tile from the fitted subset, the host link from the
    2-/4-seg rows; every figure predicted by the reference (``figs``' predictions). None if the fast features
    disagree with the reference."""
    cache = fit_cache(memory_segments(figs), preset)
    cache_spec = preset.with_(cache_bytes=int(cache["cache_mib"] * MiB), cache_io_share=cache["share"])
    obs = observe(figs, cache_spec)
    mask = np.array([f.fitted for f in figs])
    rate, top = implied_link_rate(figs)
    shared = math.ceil(rate / LINK_STEP) * LINK_STEP if terms.shared_link_per_byte(preset) > 0 else 0.0
    link_spec = cache_spec.with_(shared_link_bytes_per_s=shared)  # (the link does not touch the fitted one-TPU figures)
    t0 = time.perf_counter()
    prior_tile = int(hw_fit.constants(preset)["stream_tile_positions"])
    fr = fit_time(obs, mask, np.log(hw_fit.theta(preset)[:6]), prior_tile, link_spec)
    t_fit = time.perf_counter() - t0
    spec, link_why = choose_link(obs, fitted_spec(fr, cache, shared, preset), shared, rate, top)
    dev = check_fast(obs, figs, spec)
    if dev > 1e-9:
        print(f"calibrate: the fit's features deviate from hardware.stage_costs by {dev:.2e}", file=sys.stderr)
        return None
    info = [
        time_fit_line(fr, int(mask.sum()), t_fit),
        cache_fit_line(cache),
        f"host link: {link_why}",
        (
            f"the fit's linear features equal hardware.stage_costs + pipeline_period_ms on all {len(figs)} figures "
            f"(max relative deviation {dev:.1e}); constants rounded to 3 significant digits before every table"
        ),
    ]
    result = Fit(spec, how_fitted(), info)
    if with_loo:
        result.loo_rows, result.loo_summary, result.loo_spread = loo(obs, figs, mask, fr, spec)
        result.loo_ms = {str(r[0]): float(r[4]) for r in result.loo_rows}
        result.profile_rows, result.profile_note = io_profile(obs, mask, fr, link_spec)
    return result


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


def ratio_row(label: str, role: str, q: np.ndarray) -> list[object]:
    within = [int(ok(q, 0.15).sum()), int(ok(q, 0.30).sum())]
    return [label, role, len(q), f"{q.min():.3f}", f"{q.max():.3f}", rms_ratio(q), *within]


def summary_rows(figs: Sequence[Figure]) -> list[list[object]]:
    order = []
    for f in figs:
        key = (f.group, "fitted" if f.fitted else "held out")
        if key not in order:
            order.append(key)
    rows = []
    for g, role in order:
        q = np.array([f.ratio for f in figs if f.group == g and ("fitted" if f.fitted else "held out") == role])
        rows.append(ratio_row(g, role, q))
    for role, sel in (("all fitted", True), ("all held out", False)):
        rows.append(ratio_row(f"**{role}**", "", np.array([f.ratio for f in figs if f.fitted == sel])))
    return rows


SUMMARY_HEADER = ("group", "role", "n", "min ratio", "max ratio", "rms ratio", "within 15%", "within 30%")


def compiler_size(nbytes: float) -> str:
    """A size as edgetpu_compiler prints it (``6.86MiB``, ``320.00KiB``, ``0.00B``)."""
    for unit, scale in (("MiB", MiB), ("KiB", 2**10)):
        if nbytes >= scale:
            return f"{nbytes / scale:.2f}{unit}"
    return f"{nbytes:.2f}B"


def conv5_single(figs: Sequence[Figure]) -> dict[int, Figure]:
    """The conv5 single-TPU figure of every F."""
    return {f.row.n: f for f in figs if f.row is not None and f.row.kind == "conv5" and f.segments == 1}


def sign_table(figs: Sequence[Figure]) -> tuple[dict[int, tuple[int, int]], list[list[object]]]:
    single = conv5_single(figs)
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
            measured = [f"{f.measured_ms:.1f}", f"{s.measured_ms:.1f}", f"{f.measured_ms / s.measured_ms:.3f}"]
            predicted = [f"{f.predicted_ms:.1f}", f"{s.predicted_ms:.1f}", f"{f.predicted_ms / s.predicted_ms:.3f}"]
            wrong.append([f.segments, f.row.n, *measured, *predicted])
    return {k: (v[0], v[1]) for k, v in counts.items()}, wrong


def link_row(label: str, multi: Sequence[Figure], single: dict[int, Figure], spec: EdgeTpuSpec) -> list[object]:
    """One host-link variant (``spec``) on the multi-segment rows."""
    ratios: list[float] = []
    binds, sign = 0, 0
    for f in multi:
        costs = stage_costs(f.graph, f.stages, f.segments, spec)
        p = figure_ms(costs, f.segments, spec)
        binds += pipeline_period_ms(costs, spec) > max(c.ms for c in costs) + 1e-12
        ratios.append(p / f.measured_ms)
        assert f.row is not None, "every multi-segment figure is a sweep row"
        one = single[f.row.n]
        sign += np.sign(f.measured_ms - one.measured_ms) == np.sign(p - one.predicted_ms)
    q = np.array(ratios)
    le = log_err(q)
    by_k = {k: np.array([x for x, f in zip(q, multi) if f.segments == k]) for k in (2, 4)}
    return [
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


def shared_link_rows(figs: Sequence[Figure], spec: EdgeTpuSpec) -> tuple[list[list[object]], str]:
    """Each host-link variant on the 2-/4-segment rows, and the largest aggregate host traffic a row implies."""
    multi = [f for f in figs if f.segments > 1]
    rate, top = implied_link_rate(figs)
    note = (
        f"Largest aggregate host-link traffic a row implies (bytes all its segments move per request / "
        f"measured time): {rate / 1e6:.0f} MB/s ({top.name}, {top.measured_ms:.2f} ms); one shared link "
        f"slower than that is refuted by the row itself, whatever the model predicts."
    )
    single = conv5_single(figs)
    current = shared_link_rate(spec)
    rows = []
    for b in sorted(set(SHARED_LINKS) | {current}):
        label = f"shared, {b / 1e6:.0f} MB/s" if b else "separate links"
        if b < rate and b:
            label += " (refuted by the data)"
        if b == current:
            label = f"**{label} (this spec)**"
        rows.append(link_row(label, multi, single, spec.with_(shared_link_bytes_per_s=b)))
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
_CPU = ("cpu_op_s", "cpu_macs_per_s")


def spec_rows(spec: EdgeTpuSpec, preset: EdgeTpuSpec, how: dict[str, str]) -> list[list[object]]:
    """The table of constants (hardware.fit.constant_rows): this spec, the preset, their ratio, unit, how."""
    prior = hw_fit.constants(preset)
    out: list[list[object]] = []
    for name, v, unit in hw_fit.constant_rows(spec):
        if name in _CPU:
            continue
        p = prior[name]
        if name == "cache_bytes":
            unit = f"{unit} ({v / MiB:.3f} MiB)"
        change = f"{v / p:.3f}x" if p else ("=" if v == p else "-")
        out.append([name, f"{v:.4g}", f"{p:.4g}", change, unit, how.get(name, "fixed")])
    mine = hw_fit.constants(spec)
    name = " / ".join(_CPU)
    both = [" / ".join(f"{c[k]:g}" for k in _CPU) for c in (mine, prior)]
    out.append([name, *both, "", " / ".join(hw_fit.UNITS[k] for k in _CPU), how.get(name, "fixed")])
    return out


@dataclass
class Report:
    """The lines of calibration.md; :meth:`emit` also prints them (with --quiet only the ``always`` ones)."""

    quiet: bool
    lines: list[str] = field(default_factory=list)

    def emit(self, text: str = "", always: bool = False) -> None:
        self.lines.append(text)
        if always or not self.quiet:
            print(text)

    def table(self, heading: str, header: Sequence[str], rows: Sequence[Sequence[object]]) -> None:
        """A section of one table, printed whatever --quiet says."""
        self.emit(f"## {heading}\n", always=True)
        self.emit(md_table(header, rows), always=True)
        self.emit()


def header_section(rep: Report, title: str, args: argparse.Namespace, argv: list[str] | None, info: list[str]) -> None:
    rep.emit(f"# Edge TPU device model calibration: {title}\n", always=True)
    rep.emit(f"- date: {datetime.datetime.now().astimezone().isoformat(timespec='seconds')}")
    rep.emit(
        f"- machine: {platform.node()} ({platform.platform()}, {platform.processor() or platform.machine()}, "
        f"Python {platform.python_version()})"
    )
    rep.emit(f"- command: `python -m tools.calibrate {shlex.join(sys.argv[1:] if argv is None else argv)}`")
    rep.emit(f"- reference data: {args.ref}; zoo: {args.zoo}")
    for line in info:
        rep.emit(f"- {line}")
    rep.emit()


ZOO_HEADER = (
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
)


def zoo_rows(figs: Sequence[Figure]) -> list[list[object]]:
    rows: list[list[object]] = []
    for f in figs:
        if f.zoo is None:
            continue
        c = f.costs[0]
        target = 1.25 if f.fitted else 1.35
        mib = [
            f"{(c.on_chip_bytes + c.off_chip_bytes) / MiB:.2f}",
            f"{c.on_chip_bytes / MiB:.2f}",
            f"{c.off_chip_bytes / MiB:.2f}",
        ]
        rows.append(
            [
                f.name,
                f.source,
                "fitted" if f.fitted else "held out",
                f"{f.graph.total_macs / 1e9:.2f}",
                *mib,
                f"{f.measured_ms:g}",
                f"{f.predicted_ms:.2f}",
                f"{f.ratio:.3f}",
                "yes" if ok(f.ratio, target - 1) else "**no**",
            ]
        )
    return rows


SIGN_HEADER = (
    "K",
    "F",
    "measured K-seg",
    "measured 1 TPU",
    "measured ratio",
    "predicted K-seg",
    "predicted 1 TPU",
    "predicted ratio",
)


def sign_section(rep: Report, figs: Sequence[Figure]) -> None:
    counts, wrong = sign_table(figs)
    rep.emit("## Sign of (K-segment figure - one TPU) on the conv5 rows\n", always=True)
    rep.emit(", ".join(f"{k} segments: right for {r} of {n}" for k, (r, n) in sorted(counts.items())), always=True)
    if wrong:
        rep.emit("\nWrong:\n")
        rep.emit(md_table(SIGN_HEADER, wrong))
    rep.emit()


def link_section(rep: Report, figs: Sequence[Figure], spec: EdgeTpuSpec) -> None:
    link_rows, link_note = shared_link_rows(figs, spec)
    rate = shared_link_rate(spec)
    rep.emit("## Shared host link hypothesis (2- and 4-segment rows, all held out)\n", always=True)
    rep.emit(md_table(SHARED_HEADER, link_rows), always=True)
    rep.emit(
        f"\n{link_note} This spec: shared_link_bytes_per_s = {rate:g} "
        f"({'separate links' if not rate else 'one shared host controller'}).",
        always=True,
    )
    rep.emit()


MEMORY_HEADER = (
    "figure",
    "seg",
    "on meas",
    "on pred",
    "off meas",
    "off pred",
    "compiler log (pred)",
    "In+Out MiB",
    "within",
)


def memory_rows(figs: Sequence[Figure]) -> list[list[object]]:
    """Every sweep segment's predicted and measured on- / off-chip MiB; the last column: within 1%, 10% or **no**."""
    rows: list[list[object]] = []
    for f in figs:
        if f.row is None:
            continue
        for c in f.costs:
            on, off = c.on_chip_bytes / MiB, c.off_chip_bytes / MiB
            mo, mf = f.row.on_chip_mib[c.index], f.row.off_chip_mib[c.index]
            ok1 = bool(within(np.array(on), mo, 0.01) & within(np.array(off), mf, 0.01))
            ok10 = bool(within(np.array(on), mo, 0.10) & within(np.array(off), mf, 0.10))
            log = f"{compiler_size(c.on_chip_bytes)} / {compiler_size(c.off_chip_bytes)}"
            io = f"{(c.in_bytes + c.out_bytes) / MiB:.3f}"
            rows.append([f.name, c.index, f"{mo:.3f}", f"{on:.3f}", f"{mf:.3f}", f"{off:.3f}", log, io])
            rows[-1].append("1%" if ok1 else ("10%" if ok10 else "**no**"))
    return rows


def memory_section(rep: Report, mem_rows: Sequence[Sequence[object]], spec: EdgeTpuSpec) -> None:
    n1 = sum(r[-1] == "1%" for r in mem_rows)
    n10 = sum(r[-1] in ("1%", "10%") for r in mem_rows)
    c = hw_fit.constants(spec)
    cache_mib, share = c["cache_bytes"] / MiB, c["cache_io_share"]
    rep.emit("## Compiler memory columns: on-chip / off-chip MiB per segment, measured vs predicted\n", always=True)
    rep.emit(
        f"{n1} of {len(mem_rows)} segments have on- and off-chip MiB within 1% (+0.0005 MiB of print rounding), {n10} "
        f"within 10% (cache {cache_mib:.3f} MiB, share {share}).",
        always=True,
    )
    bad = [r for r in mem_rows if r[-1] != "1%"]
    if bad:
        rep.emit("\nSegments not within 1%:\n", always=True)
        rep.emit(md_table(MEMORY_HEADER, bad), always=True)
    rep.emit()


def loo_section(rep: Report, fit: Fit | None) -> None:
    if fit is not None and fit.loo_rows:
        rep.emit("## Leave-one-out over the fitted set\n", always=True)
        rep.emit(fit.loo_summary, always=True)
        rep.emit()
        rep.emit(md_table(("figure", "group", "measured ms", "fit ms", "LOO ms", "LOO ratio", "LOO tile"), fit.loo_rows))
        rep.emit()
    elif fit is not None:
        rep.emit("(leave-one-out: run with --loo)\n")


def figures_section(rep: Report, figs: Sequence[Figure], notes: Sequence[str]) -> None:
    rep.emit("## Every reference figure (predicted vs measured)\n")
    rows = [
        [f.group, f.name, f.segments, "fitted" if f.fitted else "held out"]
        + [f"{f.measured_ms:.3f}", f"{f.predicted_ms:.3f}", f"{f.ratio:.3f}"]
        for f in figs
    ]
    rep.emit(md_table(("group", "figure", "K", "role", "measured ms", "predicted ms", "ratio"), rows))
    rep.emit()
    rep.emit("## Notes\n")
    for note in notes:
        rep.emit(f"- {note}")
    rep.emit()


def zoo_cpu_ms(path: Path) -> float:
    """This machine's CPU-only LiteRT time of a zoo model, ms (cached)."""
    return cpu_only_seconds(path, runs=3) * 1e3


def with_ref(spec: EdgeTpuSpec, ref_ms: float) -> EdgeTpuSpec:
    """``spec`` as a preset: its host speed as the reference workload's time there (``host_ref_ms``, the
    scale times this machine's ``ref_ms``), the scale itself left to each planning machine."""
    return spec.with_(host_ref_ms=float(f"{spec.host_op_scale * ref_ms:.3g}"), host_op_scale=1.0)


def usb_host_speed(figs: Sequence[Figure], fit: Fit, zoo: Path) -> None:
    """The USB host's ``host_op_scale``: fitted to its figures with heavy host ops (DeepLab v3), a priori the
    desktop CPU-only column over this machine's CPU-only times; every figure predicted again with it."""
    prior, prior_how = hosts.cpu_column_scale(0, lambda name: zoo_cpu_ms(zoo / name) if (zoo / name).is_file() else None)
    zoo_figs = [f for f in figs if f.zoo is not None and not f.zoo.excluded]
    scale, heavy = hosts.fit_scale([(f.graph, f.measured_ms) for f in zoo_figs], fit.spec, prior)
    fit.spec = fit.spec.with_(host_op_scale=scale)
    fit.scale_rows = [zoo_figs[i].name for i in heavy]
    for i in heavy:
        zoo_figs[i].fitted = True
    fit.how["host_op_scale"] = "set at plan time: host_ref_ms / the planning machine's reference time"
    fit.how["host_ref_ms"] = (
        f"fitted to {', '.join(fit.scale_rows)} (a priori {prior:.3g}: desktop CPU-only column / this machine, {prior_how})"
        if heavy
        else f"a priori: desktop CPU-only column / this machine ({prior_how})"
    )
    predict_reference(figs, fit.spec)


def usb_held_out_ratios(figs: Sequence[Figure], fit: Fit) -> list[float]:
    """Each USB single-TPU figure's held-out ratio (predicted / measured): a fitted figure's leave-one-out
    prediction, a held-out figure's own; the excluded figure and those that fixed the host speed (they have
    no held-out prediction) left out."""
    return [
        (fit.loo_ms[f.name] if f.fitted else f.predicted_ms) / f.measured_ms
        for f in figs
        if f.zoo is not None and not f.zoo.excluded and (not f.fitted or f.name in fit.loo_ms)
    ]


def usb_typical_error(figs: Sequence[Figure], fit: Fit) -> float:
    """The USB preset's typical error: the geometric mean of max(r, 1/r) over :func:`usb_held_out_ratios`."""
    q = usb_held_out_ratios(figs, fit)
    return float(np.exp(np.abs(np.log(q)).mean())) if q else 0.0


HOST_HEADER = ("figure", "source", "measured ms", "fitted ms", "ratio", "LOO ms", "LOO ratio", "within target")


def host_rows(hf: hosts.HostFit) -> list[list[object]]:
    out: list[list[object]] = []
    for r in hf.rows:
        q = r.loo_ratio
        if r.excluded:
            ok_ = "excluded: " + r.excluded
        elif q is None:
            ok_ = "yes (it fits host_op_scale: no LOO)" if abs(r.ratio - 1) <= 0.25 else "**no**"
        else:
            ok_ = "yes" if abs(r.ratio - 1) <= 0.25 and abs(q - 1) <= 0.35 else "**no**"
        out.append(
            [r.label, r.source, f"{r.measured_ms:g}", f"{r.fitted_ms:.2f}", f"{r.ratio:.3f}",
             "-" if r.loo_ms is None else f"{r.loo_ms:.2f}", "-" if q is None else f"{q:.3f}", ok_]
        )  # fmt: skip
    return out


def usb_counts(figs: Sequence[Figure], fit: Fit) -> list[object]:
    """The USB preset's row of the presets table: its single-TPU figures (the excluded one left out), fitted
    within 25%, held out (a fitted figure's LOO prediction, or a held-out figure's) within 35%."""
    rows = [f for f in figs if f.zoo is not None and not f.zoo.excluded]
    fitted = [f for f in rows if f.fitted]
    held = usb_held_out_ratios(figs, fit)
    return [
        "usb",
        "x86-64 + USB 3 (the fit above; its single-TPU figures)",
        len(rows),
        f"{sum(1 for f in fitted if abs(f.ratio - 1) <= 0.25)}/{len(fitted)}",
        f"{sum(1 for q in held if abs(q - 1) <= 0.35)}/{len(held)}",
        f"x{fit.spec.typical_error:.2f}",
    ]


def hosts_section(rep: Report, fit: Fit, figs: Sequence[Figure]) -> None:
    """The host presets: how each was fitted, its constants and spread, every row with its held-out ratio."""
    rep.emit("## Host presets (fitted on top of this USB fit, leave-one-out per row)\n", always=True)
    rep.emit("\n\n".join((hosts.__doc__ or "").split("\n\n")[1:3]) + "\n")
    summary = []
    for name, hf in fit.hosts.items():
        used = [r for r in hf.rows if not r.excluded]
        fitted_ok = sum(1 for r in used if abs(r.ratio - 1) <= 0.25)
        loo_ok = sum(1 for r in used if r.loo_ratio is not None and abs(r.loo_ratio - 1) <= 0.35)
        held = sum(1 for r in used if r.loo_ratio is not None)
        summary.append([name, hf.setup.description, len(used), f"{fitted_ok}/{len(used)}", f"{loo_ok}/{held}",
                        f"x{hf.spec.typical_error:.2f}"])  # fmt: skip
    rep.table(
        "Presets: rows within target (fitted 25%, held out 35%)",
        ("preset", "host", "rows", "fitted within 25%", "held out within 35%", "typical error (held out)"),
        [usb_counts(figs, fit), *summary],
    )
    for name, hf in fit.hosts.items():
        rep.emit(f"### {name}: {hf.setup.description}\n", always=True)
        scale = hf.spec.host_ref_ms / fit.ref_ms
        c = {**hw_fit.constants(hf.spec), "host_op_scale": scale}
        fitted = ", ".join(f"{k} {c[k]:.3g} (LOO {lo:.3g}..{hi:.3g})" for k, (lo, hi) in hf.spread.items())
        rep.emit(f"- fitted: {fitted}", always=True)
        rep.emit(
            f"- host_op_scale {scale:.3g} on this machine (host_ref_ms {hf.spec.host_ref_ms:g}: the reference "
            f"workload takes {fit.ref_ms:.3f} ms here): {hf.scale_how}",
            always=True,
        )
        rep.emit(f"- link: {hf.setup.link} (rates bounded by {hosts.LINK_MAX_BYTES_PER_S[hf.setup.link] / 1e6:.0f} MB/s); "
                 f"shared controller {hf.spec.shared_link_bytes_per_s / 1e6:g} MB/s", always=True)  # fmt: skip
        for m in hf.missing:
            rep.emit(f"- {m}", always=True)
        rep.emit()
        rep.emit(md_table(HOST_HEADER, host_rows(hf)), always=True)
        rep.emit()


def identifiability_section(rep: Report, fit: Fit | None) -> None:
    if fit is None or not fit.loo_spread:
        return
    rows = []
    c = hw_fit.constants(fit.spec)
    for name, (lo, hi) in fit.loo_spread.items():
        rows.append([name, f"{c[name]:.4g}", f"{lo:.4g}", f"{hi:.4g}", f"{hi / lo:.3f}" if lo > 0 else "-"])
    rep.table(
        "Identifiability: each constant over the leave-one-out refits",
        ("constant", "fit", "LOO min", "LOO max", "max / min"),
        rows,
    )
    rep.table(
        "Identifiability: the activation link rate fixed, the rest refitted",
        ("io MB/s", "cost", "cost / free fit", "eff conv", "eff depthwise", "t_invoke us", "stream MB/s", "tile"),
        fit.profile_rows,
    )
    rep.emit(fit.profile_note + "\n", always=True)


def write_report(
    rep: Report,
    args: argparse.Namespace,
    argv: list[str] | None,
    figs: Sequence[Figure],
    notes: Sequence[str],
    fit: Fit | None,
) -> None:
    """Every section of calibration.md, in order (the full memory table only in the file)."""
    spec = USB if fit is None else fit.spec
    title = "evaluation of the current USB preset (hardware/spec.py), no fit" if fit is None else FIT_TITLE
    header_section(rep, title, args, argv, [] if fit is None else fit.info)
    how = {} if fit is None else fit.how
    constants_header = ("constant", "this spec", "preset (hardware/spec.py USB)", "this / preset", "unit", "how")
    rep.table("Constants", constants_header, spec_rows(spec, USB, how))
    rep.table("Summary per group (ratio = predicted / measured)", SUMMARY_HEADER, summary_rows(figs))
    rep.table("ImageNet figures (one USB TPU; target within 25% fitted, 35% held out)", ZOO_HEADER, zoo_rows(figs))
    sign_section(rep, figs)
    link_section(rep, figs, spec)
    mem_rows = memory_rows(figs)
    memory_section(rep, mem_rows, spec)
    loo_section(rep, fit)
    identifiability_section(rep, fit)
    if fit is not None and fit.hosts:
        hosts_section(rep, fit, figs)
    figures_section(rep, figs, notes)
    rep.lines.append("## Per-segment memory, every sweep segment (compiler log format for the prediction)\n")
    rep.lines.append(md_table(MEMORY_HEADER, mem_rows))


FIT_TITLE = "fit of the USB device model to the named subset"
CSV_HEADER = (
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
)


def write_csv(path: Path, figs: Sequence[Figure]) -> None:
    with path.open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(CSV_HEADER)
        for f in figs:
            mem = ["", "", "", ""]
            if f.row is not None:
                mem = [
                    ";".join(f"{v:.4f}" for v in f.row.on_chip_mib),
                    ";".join(f"{c.on_chip_bytes / MiB:.4f}" for c in f.costs),
                    ";".join(f"{v:.4f}" for v in f.row.off_chip_mib),
                    ";".join(f"{c.off_chip_bytes / MiB:.4f}" for c in f.costs),
                ]
            role = "fitted" if f.fitted else "held_out"
            measured = [f"{f.measured_ms:.4f}", f"{f.predicted_ms:.4f}", f"{f.ratio:.4f}"]
            w.writerow([f.group, f.name, f.segments, role, *measured, f.source, *mem])


def pcie_preset(devboard: EdgeTpuSpec, usb: EdgeTpuSpec) -> EdgeTpuSpec:
    """x86-64 with an M.2 / mini-PCIe Edge TPU: no public figure, so not fitted: the Dev Board's PCIe link
    rates with the x86 host's invocation cost and host speed (the USB fit's); its typical error is not known."""
    return devboard.with_(name="pcie", t_invoke_s=usb.t_invoke_s, host_ref_ms=usb.host_ref_ms, typical_error=0.0)


def write_outputs(out_dir: Path, rep: Report, figs: Sequence[Figure], fit: Fit | None) -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    write_csv(out_dir / "calibration.csv", figs)
    (out_dir / "calibration.md").write_text("\n".join(rep.lines) + "\n")
    if fit is not None:
        (out_dir / "usb_fitted.json").write_text(fit.spec.to_json())
    if fit is not None and fit.hosts:
        presets = {"usb": fit.spec, **{n: hf.spec for n, hf in fit.hosts.items()}}
        presets["pcie"] = pcie_preset(fit.hosts["devboard"].spec, fit.spec)
        doc = {n: json.loads(p.to_json()) for n, p in presets.items()}
        (out_dir / "presets_fitted.json").write_text(json.dumps(doc, indent=2) + "\n")
    print(
        f"wrote {out_dir / 'calibration.csv'}, {out_dir / 'calibration.md'}"
        + ("" if fit is None else f", {out_dir / 'usb_fitted.json'}")
    )


# ---------------------------------------------------------------------------------------------------------


def parse_args(argv: list[str] | None) -> argparse.Namespace:
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
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    t_start = time.perf_counter()
    if args.build_missing:
        build_missing(args.zoo)
    out_dir = args.out if args.out is not None else (None if args.no_fit else ROOT / "results")
    figs, notes = load_figures(args.ref, args.zoo)
    if args.check_tf and not check_tf(notes):
        return 1
    fit = None
    if args.no_fit:
        predict_reference(figs, localized(USB, REFERENCE_MODEL))
    elif (fit := run_fit(figs, localized(USB, REFERENCE_MODEL), args.loo)) is None:
        return 1
    if fit is not None and args.loo:
        usb_host_speed(figs, fit, args.zoo)
        fit.spec = fit.spec.with_(typical_error=round(usb_typical_error(figs, fit), 2))
        fit.hosts = hosts.fit_all(fit.spec, args.zoo, zoo_graph, zoo_cpu_ms)
        ref_ms = cpu_only_seconds(REFERENCE_MODEL) * 1e3
        fit.ref_ms = ref_ms
        fit.spec = with_ref(fit.spec, ref_ms)
        fit.hosts = {n: replace(hf, spec=with_ref(hf.spec, ref_ms)) for n, hf in fit.hosts.items()}
    rep = Report(args.quiet)
    write_report(rep, args, argv, figs, notes, fit)
    runtime = time.perf_counter() - t_start
    at = next(i for i, line in enumerate(rep.lines) if line.startswith("- command:")) + 1
    rep.lines.insert(at, f"- runtime: {runtime:.1f} s")
    print(f"\n(runtime {runtime:.1f} s)")
    if out_dir is not None:
        write_outputs(out_dir, rep, figs, fit)
    return 0


if __name__ == "__main__":
    sys.exit(main())
