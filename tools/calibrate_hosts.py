"""Fit the host presets (Dev Board, Raspberry Pi 4 / 3B) of the Edge TPU device model to their columns of the
public measurements, with leave-one-out, on top of the USB fit of ``tools/calibrate.py``.

The Edge TPU is the same chip on every host, so the constants of the chip (MAC and element-wise efficiency,
the parameter cache, the stream tile) come from the USB fit. What changes with the host is fitted per host:

* ``t_invoke_s`` (the runtime's and driver's cost per invocation, on that host's CPU) and the link rates
  ``io_bytes_per_s`` / ``stream_bytes_per_s`` (PCIe Gen2 x1 on the Dev Board; USB 3 on a Pi 4; USB 2 on a
  Pi 3B). Where a host has only the four pycoral rows (the Pis), the two rates move by one common factor
  (``link`` below), so that two constants are fitted from four rows. Every rate is bounded by its link's
  raw payload rate (:data:`LINK_MAX_BYTES_PER_S`), ``t_invoke_s`` by 10 us .. 10 ms.
* ``host_op_scale``, how much slower the host runs host (CPU) ops than this machine (where they are timed
  by LiteRT): fitted where a figure has heavy host ops (DeepLab v3's 33x33 -> 513x513 resize and 513x513
  argmax: the USB and Dev Board columns); its a-priori value, the CPU-only columns over this machine's
  CPU-only time of the same models, is reported beside it. A Pi 3B gets the Dev Board's times the clock
  ratio 1.5 / 1.2 GHz (the same Cortex-A53: an assumption from the clocks); a Pi 4 (Cortex-A72 at 1.5 GHz,
  no CPU-only or host-op figure in the reference) the Dev Board's, an upper bound. Stored in the preset as
  ``host_ref_ms``: the scale times this machine's time for the reference workload, so that another
  planning machine gets its own scale (:func:`hardware.host_time.localized`).

Every row is predicted by the reference path's linear features (:func:`hardware.fit.stage_features` of the
whole model as one stage, times :func:`hardware.fit.theta`), checked against :func:`hardware.stage_costs`.
"Held out" is leave-one-out: each row predicted by the fit without it. The preset's ``typical_error`` is the
geometric mean of max(pred / meas, meas / pred) over its held-out predictions.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from hardware import EdgeTpuSpec, stage_costs
from hardware import fit as hw_fit
from tflite_io import OpGraph
from tools import calibration_data as cd

log = logging.getLogger(__name__)

__all__ = [
    "LINK_MAX_BYTES_PER_S",
    "HOSTS",
    "HostSetup",
    "HostRow",
    "HostFit",
    "cpu_column_scale",
    "derived_scales",
    "features",
    "extended_theta",
    "fit_host",
    "fit_scale",
    "typical_error",
]

#: Raw payload rate of each link (line rate after 8b/10b coding): a fitted rate above it is not physical.
LINK_MAX_BYTES_PER_S = {"usb3": 5e8, "usb2": 6e7, "pcie": 5e8}
_INVOKE_BOUNDS = (1e-5, 1e-2)
_RATE_FLOOR = 1e6
_SCALE_BOUNDS = (0.05, 500.0)
#: a figure informs the host speed when its host ops take at least this share of its predicted time
HOST_HEAVY = 0.2
_CLOCK_RPI3 = 1.5 / 1.2  # Dev Board's Cortex-A53 clock over the Pi 3B's


@dataclass(frozen=True)
class HostSetup:
    """A host preset: its name, what it is, its link, which constants are fitted, its shared controller."""

    name: str
    description: str
    link: str
    free: tuple[str, ...]  # "t_invoke_s", "io", "stream", or "link" (io and stream by one factor)
    shared_link_bytes_per_s: float


HOSTS = {
    "devboard": HostSetup("devboard", "Coral Dev Board: Edge TPU on PCIe Gen2 x1, quad Cortex-A53 1.5 GHz", "pcie",
                          ("t_invoke_s", "io", "stream"), 0.0),
    "rpi4": HostSetup("rpi4", "Raspberry Pi 4: USB Accelerators on USB 3, quad Cortex-A72 1.5 GHz", "usb3",
                      ("t_invoke_s", "link"), 5e8),
    "rpi3": HostSetup("rpi3", "Raspberry Pi 3B: USB Accelerators on USB 2, quad Cortex-A53 1.2 GHz", "usb2",
                      ("t_invoke_s", "link"), 6e7),
}  # fmt: skip


def cpu_column_scale(column: int, cpu_ms: Callable[[str], float | None]) -> tuple[float, str]:
    """The a-priori host speed: geometric mean over section 1's models of the CPU-only ``column`` (0 desktop,
    2 embedded) over this machine's CPU-only time of the same model (``cpu_ms(zoo_file)``, None if not built)."""
    q = []
    for label, row in cd.CORAL_TABLE.items():
        here = cpu_ms(cd.MODEL_FILES[label])
        if here:
            q.append(row[column] / here)
    if not q:
        return 1.0, "no CPU-only time measured here"
    a = np.array(q)
    return float(np.exp(np.log(a).mean())), f"{len(a)} models, {a.min():.1f}..{a.max():.1f}"


def derived_scales(devboard: float) -> dict[str, tuple[float, str]]:
    """The Pis' ``host_op_scale`` from the Dev Board's (no host-op figure of their own)."""
    return {
        "rpi3": (
            devboard * _CLOCK_RPI3,
            f"the Dev Board's x {_CLOCK_RPI3:.2f} (the same Cortex-A53 at 1.2 GHz; an assumption)",
        ),
        "rpi4": (devboard, "the Dev Board's (a Cortex-A72 at 1.5 GHz is not slower than an A53: an upper bound)"),
    }


@dataclass(frozen=True)
class HostRow:
    """One figure of a host fit: measured, fitted and held-out (leave-one-out) predictions in ms."""

    label: str
    source: str
    measured_ms: float
    fitted_ms: float
    loo_ms: float | None  # None for an excluded row (predicted by the whole fit only)
    excluded: str = ""

    @property
    def ratio(self) -> float:
        return self.fitted_ms / self.measured_ms

    @property
    def loo_ratio(self) -> float | None:
        return None if self.loo_ms is None else self.loo_ms / self.measured_ms


@dataclass(frozen=True)
class HostFit:
    """A fitted host preset: the spec, every row, the spread of each fitted constant over the LOO fits."""

    setup: HostSetup
    spec: EdgeTpuSpec
    rows: tuple[HostRow, ...]
    spread: Mapping[str, tuple[float, float]]
    scale_how: str
    missing: tuple[str, ...] = ()


def _theta_of(base: np.ndarray, free: Sequence[str], u: np.ndarray) -> np.ndarray:
    """The coefficients of the extended features (:func:`features`): hardware.fit.theta and the scale."""
    th = base.copy()
    for name, value in zip(free, np.exp(u)):
        if name == "host_op_scale":
            th[7] = value
        elif name == "t_invoke_s":
            th[0] = value
        elif name == "io":
            th[4] = value
        elif name == "stream":
            th[5] = value
        else:  # "link": both rates scaled by one factor (value is seconds-per-byte multiplier)
            th[4], th[5] = base[4] * value, base[5] * value
    return th


def _bounds(setup: HostSetup, base: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    lo_rate, hi_rate = 1 / LINK_MAX_BYTES_PER_S[setup.link], 1 / _RATE_FLOOR  # seconds per byte
    lo, hi = [], []
    for name in setup.free:
        if name == "t_invoke_s":
            a, b = _INVOKE_BOUNDS
        elif name == "host_op_scale":
            a, b = _SCALE_BOUNDS
        elif name in ("io", "stream"):
            a, b = lo_rate, hi_rate
        else:  # a factor on both: the faster of the two rates stays under the link's
            a, b = lo_rate / min(base[4], base[5]), hi_rate / max(base[4], base[5])
        lo.append(math.log(a))
        hi.append(math.log(b))
    return np.array(lo), np.array(hi)


def _fit(feats: np.ndarray, meas: np.ndarray, base: np.ndarray, setup: HostSetup) -> np.ndarray:
    from scipy.optimize import least_squares

    lo, hi = _bounds(setup, base)
    u0 = np.clip(_start(base, setup), lo + 1e-9, hi - 1e-9)

    def res(u: np.ndarray) -> np.ndarray:
        return np.log(feats @ _theta_of(base, setup.free, u) * 1e3 / meas)

    return least_squares(res, u0, bounds=(lo, hi), method="trf", xtol=1e-12, ftol=1e-12).x


def _start(base: np.ndarray, setup: HostSetup) -> np.ndarray:
    start = {"t_invoke_s": base[0], "io": base[4], "stream": base[5], "link": 1.0, "host_op_scale": base[7]}
    return np.log([start[n] for n in setup.free])


def features(graph: OpGraph, spec: EdgeTpuSpec) -> np.ndarray:
    """hardware.fit.stage_features of the whole graph as one stage, with the host column split in two: the
    hand-off link time (coefficient 1) and the host ops' own time on this machine (coefficient: the scale)."""
    f1 = hw_fit.stage_features(graph, spec.with_(host_op_scale=1.0))
    own = hw_fit.stage_features(graph, spec.with_(host_op_scale=2.0))[6] - f1[6]
    return np.append(f1[:6], [f1[6] - own, own])


def extended_theta(spec: EdgeTpuSpec) -> np.ndarray:
    """The coefficients of :func:`features` in ``spec``."""
    return np.append(hw_fit.theta(spec), spec.host_op_scale)


def _spec_of(spec: EdgeTpuSpec, th: np.ndarray) -> EdgeTpuSpec:
    return hw_fit.rounded(hw_fit.with_theta(spec, th[:7])).with_(host_op_scale=float(f"{th[7]:.3g}"))


def fit_host(
    setup: HostSetup,
    usb: EdgeTpuSpec,
    graphs: Callable[[str], OpGraph | None],
    scale: tuple[float, str],
    fit_scale: bool,
) -> HostFit:
    """Fit ``setup``'s free constants on top of the USB fit ``usb`` to its figures; leave-one-out per row.
    ``graphs(zoo_file)`` gives a model's placed graph (host times measured), None when it is not built;
    ``scale`` is the host's a-priori ``host_op_scale`` (and how it was found), fitted too when ``fit_scale``
    and a figure has heavy host ops (:data:`HOST_HEAVY`)."""
    start = usb.with_(
        name=setup.name,
        host_op_scale=round(scale[0], 3),
        shared_link_bytes_per_s=min(setup.shared_link_bytes_per_s, LINK_MAX_BYTES_PER_S[setup.link]),
        io_bytes_per_s=min(usb.io_bytes_per_s, LINK_MAX_BYTES_PER_S[setup.link]),
        stream_bytes_per_s=min(usb.stream_bytes_per_s, LINK_MAX_BYTES_PER_S[setup.link]),
        typical_error=0.0,
    )
    figs, missing = [], []
    for f in cd.host_figures(setup.name):
        g = graphs(f.zoo_file)
        if g is None:
            missing.append(f"not predicted: {f.label} ({f.source}, {f.ms} ms): {f.zoo_file} not built")
        else:
            figs.append((f, g))
    feats = np.array([features(g, start) for _, g in figs])
    meas = np.array([f.ms for f, _ in figs])
    used = np.array([not f.excluded for f, _ in figs])
    base = extended_theta(start)
    heavy = used & (feats[:, 7] * base[7] >= HOST_HEAVY * (feats @ base))
    free = setup.free + (("host_op_scale",) if fit_scale and heavy.any() else ())
    setup_free = replace(setup, free=free)
    u = _fit(feats[used], meas[used], base, setup_free)
    spec = _spec_of(start, _theta_of(base, free, u))
    fitted = feats @ extended_theta(spec) * 1e3
    loo: list[float | None] = []
    notes: list[str] = []
    per_fit: list[EdgeTpuSpec] = []
    for i, (f, _) in enumerate(figs):
        if not used[i]:
            loo.append(None)
            continue
        if "host_op_scale" in free and heavy[i] and heavy.sum() == 1:
            loo.append(None)  # nothing else informs the host's speed: no held-out prediction
            notes.append(f"{f.label}: the one figure with heavy host ops: it alone fits host_op_scale (no LOO)")
            continue
        keep = used.copy()
        keep[i] = False
        s_i = _spec_of(start, _theta_of(base, free, _fit(feats[keep], meas[keep], base, setup_free)))
        per_fit.append(s_i)
        loo.append(float(feats[i] @ extended_theta(s_i) * 1e3))
    rows = tuple(HostRow(f.label, f.source, f.ms, float(p), q, f.excluded) for (f, _), p, q in zip(figs, fitted, loo))
    spec = spec.with_(typical_error=round(typical_error(rows), 2))
    _check_reference(figs, spec)
    how = scale[1] if "host_op_scale" not in free else f"fitted (a priori {scale[0]:.3g}: {scale[1]})"
    return HostFit(setup_free, spec, rows, _spread(per_fit, setup_free), how, tuple(missing + notes))


def _check_reference(figs: Sequence[tuple[cd.HostFigure, OpGraph]], spec: EdgeTpuSpec) -> None:
    """The linear features must give what the reference gives (a model with a feature the fit does not see
    would otherwise be predicted wrong)."""
    for f, g in figs:
        ref = stage_costs(g, (0,) * g.num_ops, 1, spec)[0].total_s
        fast = float(features(g, spec) @ extended_theta(spec))
        if not math.isclose(ref, fast, rel_tol=1e-9):
            raise AssertionError(f"{f.label}: features give {fast} s, the reference {ref} s")


def _spread(fits: Sequence[EdgeTpuSpec], setup: HostSetup) -> dict[str, tuple[float, float]]:
    names = {"t_invoke_s": ["t_invoke_s"], "io": ["io_bytes_per_s"], "stream": ["stream_bytes_per_s"],
             "link": ["io_bytes_per_s", "stream_bytes_per_s"], "host_op_scale": ["host_op_scale"]}  # fmt: skip
    out: dict[str, tuple[float, float]] = {}
    for free in setup.free:
        for name in names[free]:
            values = [hw_fit.constants(s)[name] for s in fits]
            if values:
                out[name] = (min(values), max(values))
    return out


def typical_error(rows: Sequence[HostRow]) -> float:
    """Geometric mean of max(pred / meas, meas / pred) over the held-out (LOO) predictions of ``rows``."""
    q = np.array([r.loo_ratio for r in rows if r.loo_ratio is not None])
    return float(np.exp(np.abs(np.log(q)).mean())) if len(q) else 0.0


def fit_all(
    usb: EdgeTpuSpec, zoo: Path, graph_of: Callable[[Path], OpGraph], cpu_ms: Callable[[Path], float]
) -> dict[str, HostFit]:
    """Every host of :data:`HOSTS` fitted on top of ``usb``; ``graph_of(path)`` reads and places a zoo file
    (host ops timed here), ``cpu_ms(path)`` is this machine's CPU-only time of a zoo model."""
    cache: dict[str, OpGraph | None] = {}

    def graphs(name: str) -> OpGraph | None:
        if name not in cache:
            path = zoo / name
            cache[name] = graph_of(path) if path.is_file() else None
        return cache[name]

    def cpu(name: str) -> float | None:
        return cpu_ms(zoo / name) if (zoo / name).is_file() else None

    out = {"devboard": fit_host(HOSTS["devboard"], usb, graphs, cpu_column_scale(2, cpu), fit_scale=True)}
    for name, scale in derived_scales(out["devboard"].spec.host_op_scale).items():
        out[name] = fit_host(HOSTS[name], usb, graphs, scale, fit_scale=False)
    return out


def fit_scale(rows: Sequence[tuple[OpGraph, float]], spec: EdgeTpuSpec, prior: float) -> tuple[float, list[int]]:
    """The ``host_op_scale`` that fits the figures ``(graph, measured ms)`` with heavy host ops (the others do
    not inform it), least squares on log(pred / meas), everything else as in ``spec``; ``prior`` where no
    figure is heavy. Returns the scale and the indices of the rows that fixed it."""
    from scipy.optimize import minimize_scalar

    th = extended_theta(spec.with_(host_op_scale=prior))
    feats = np.array([features(g, spec) for g, _ in rows])
    meas = np.array([ms for _, ms in rows])
    heavy = [i for i in range(len(rows)) if feats[i, 7] * prior >= HOST_HEAVY * float(feats[i] @ th)]
    if not heavy:
        return prior, []
    rest = feats[heavy, :7] @ th[:7] * 1e3
    own = feats[heavy, 7] * 1e3

    def cost(log_s: float) -> float:
        return float(np.sum(np.log((rest + math.exp(log_s) * own) / meas[heavy]) ** 2))

    lo, hi = map(math.log, _SCALE_BOUNDS)
    r = minimize_scalar(cost, bounds=(lo, hi), method="bounded", options={"xatol": 1e-6})
    return float(f"{math.exp(r.x):.3g}"), heavy
