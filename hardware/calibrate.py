"""Calibrate the device model on a device: a designed set of micro-models, measured and fitted.

The design (:func:`design`) isolates each term of :mod:`hardware.cost`:

* ``invoke``: a tiny dense layer (the per-invoke cost);
* ``conv-*`` / ``depthwise`` / ``add``: compute-heavy chains whose parameters
  are cached on any plausible cache, with small inputs and outputs;
* ``io-*``: large inputs and outputs around a cheap layer (the host link);
* ``stream-dense``: one dense layer larger than any plausible cache (streamed
  weights, one pass per inference);
* ``tile-<s>``: one 7x7 conv larger than any cache at s x s output positions,
  for the streamed conv's tile size;
* two bisections on whole-layer caching: a dense layer of growing size with
  almost nothing crossing the link gives ``cache_bytes``; a 1x1 conv whose
  input and output grow with it gives ``cache_io_share``;
* ``link-8``: eight copy-like segments in an 8-TPU pipeline: whether the TPUs
  share one host link (the period exceeds every stage) and at what rate.

Each run of a model or of a pipeline counts as one measurement. A
:class:`Device` is anything that times models; :class:`SimDevice` plays a
device whose true constants are a hidden spec (only measured times reach the
fit), so the whole loop is testable without a TPU.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import numpy as np

from tflite_io.reader import parse_model
from tflite_io.synth import Add, Conv2D, Dense, DepthwiseConv2D, Layer, synth_model
from tflite_io.writer import build_segments

from . import terms
from .cost import device_param_bytes, shared_link_ms, stage_costs
from .fit import Sample, fit_tile, predict_ms
from .placement import placed
from .simulate import measure_pipeline
from .spec import USB, EdgeTpuSpec

__all__ = [
    "Device",
    "SimDevice",
    "CoralDevice",
    "PipelineTiming",
    "Probe",
    "design",
    "calibrate",
    "cache_from",
    "Calibration",
    "graph_of",
    "tell_clock",
]

log = logging.getLogger(__name__)

#: The largest cache a device may have (2x the preset); single layers above it always stream.
MAX_CACHE = 2 * terms.cache_bytes(USB)
TILE_SIDES = (8, 12, 16, 20, 24, 28, 32, 36, 40, 44, 48, 56, 64, 75)
LINK_STAGES = 8


@dataclass(frozen=True)
class PipelineTiming:
    """A pipeline run: each segment's time alone and the steady-state period (ms)."""

    stage_ms: tuple[float, ...]
    period_ms: float


class Device(Protocol):
    """Something that times models on Edge TPUs; ``runs`` counts the measurements made."""

    name: str
    runs: int

    def time_model(self, data: bytes, label: str) -> float:
        """ms of one invoke of ``data`` (one segment, one TPU)."""

    def time_pipeline(self, segments: Sequence[bytes], label: str) -> PipelineTiming:
        """Run ``segments`` as a pipeline, one TPU each."""


def graph_of(data: bytes, label: str = "model"):
    """The placed OpGraph of model bytes."""
    return placed(parse_model(data, Path(f"{label}.tflite")).graph)


@dataclass
class SimDevice:
    """A simulated device whose constants are ``truth``; ``jitter`` is the relative noise of a timing."""

    truth: EdgeTpuSpec
    jitter: float = 0.0
    seed: int = 0
    name: str = "sim"
    runs: int = 0
    _rng: np.random.Generator = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self._rng = np.random.default_rng(self.seed)

    def _noise(self) -> float:
        return float(self._rng.lognormal(0.0, self.jitter)) if self.jitter > 0 else 1.0

    def time_model(self, data: bytes, label: str) -> float:
        self.runs += 1
        g = graph_of(data, label)
        return stage_costs(g, (0,) * g.num_ops, 1, self.truth)[0].ms * self._noise()

    def time_pipeline(self, segments: Sequence[bytes], label: str) -> PipelineTiming:
        self.runs += 1
        costs = [
            stage_costs(g, (0,) * g.num_ops, 1, self.truth)[0]
            for g in (graph_of(s, f"{label}_{i}") for i, s in enumerate(segments))
        ]
        stage = [c.ms * self._noise() for c in costs]
        fig = measure_pipeline(stage, count=50, min_period_ms=shared_link_ms(costs, self.truth))
        return PipelineTiming(tuple(stage), fig.bottleneck_ms)


@dataclass(frozen=True)
class Probe:
    """One micro-model of the design; its bytes are built when it is measured (:meth:`build`)."""

    name: str
    term: str
    input_shape: tuple[int, ...]
    layers: tuple[Layer, ...]

    def build(self, seed: int = 0) -> bytes:
        """The probe as a full-integer .tflite model."""
        return synth_model(self.input_shape, self.layers, seed=seed, name=self.name)


def _probe(name: str, term: str, shape: tuple[int, ...], layers: Sequence[Layer]) -> Probe:
    return Probe(name, term, shape, tuple(layers))


def design() -> list[Probe]:
    """The fixed part of the design (the bisections and the pipeline are built as they run)."""
    conv3 = [Conv2D(256, 3) for _ in range(4)]
    return [
        _probe("invoke", "t_invoke", (1, 64), [Dense(64)]),
        _probe("conv-32", "conv", (1, 32, 32, 16), [*conv3, Conv2D(16, 1)]),
        _probe("conv-16", "conv", (1, 16, 16, 64), [Conv2D(512, 3), Conv2D(512, 3), Conv2D(64, 1)]),
        _probe(
            "depthwise",
            "depthwise",
            (1, 64, 64, 16),
            [Conv2D(256, 1), *[DepthwiseConv2D(3) for _ in range(4)], Conv2D(16, 1)],
        ),
        _probe(
            "add",
            "elementwise",
            (1, 32, 32, 16),
            [Conv2D(256, 1), Conv2D(256, 1), *[Add(back=1) for _ in range(6)], Conv2D(16, 1)],
        ),
        _probe("io-in", "io", (1, 128, 128, 64), [Conv2D(16, 1)]),
        _probe("io-out", "io", (1, 64, 64, 16), [Conv2D(256, 1)]),
        _probe("stream-dense", "stream", (1, 4160), [Dense(4096), Dense(16)]),
        *[_probe(f"tile-{s}", "stream tile", (1, s, s, 600), [Conv2D(600, 7)]) for s in TILE_SIDES],
    ]


def _dense_filler(n_in: int) -> Probe:
    """A dense layer of ``1024 * n_in`` bytes on a vector input: almost nothing crosses the link."""
    return _probe(f"cache-dense-{n_in}", "cache_bytes", (1, n_in), [Dense(1024), Dense(16)])


def _conv_filler(filters: int) -> Probe:
    """A 1x1 conv of ``filters * 1032`` bytes on a 32x32x1024 input: its output grows with it."""
    return _probe(f"cache-conv-{filters}", "cache_io_share", (1, 32, 32, 1024), [Conv2D(filters, 1)])


#: (parameter bytes of the probe's big layer, bytes crossing the link, whether it streamed)
Observation = tuple[int, int, bool]


def _is_streamed(
    device: Device, probe: Probe, spec: EdgeTpuSpec, samples: list[Sample], seen: list[Observation], seed: int
) -> bool:
    """Measure ``probe``; decide whether its big (first) layer streamed by the closer of the two predictions."""
    data = probe.build(seed)
    ms = device.time_model(data, probe.name)
    g = graph_of(data, probe.name)
    samples.append(Sample(g, ms, probe.name))
    cached = predict_ms([Sample(g, ms)], spec.with_(cache_bytes=10 * MAX_CACHE, cache_io_share=0.0))[0]
    streamed = predict_ms([Sample(g, ms)], spec.with_(cache_bytes=0))[0]
    verdict = bool(abs(np.log(ms / streamed)) < abs(np.log(ms / cached)))
    big = next(max(b.values()) for b in (device_param_bytes(g, op) for op in g.ops) if b and max(b.values()) > 0)
    cost = stage_costs(g, (0,) * g.num_ops, 1, spec)[0]
    seen.append((big, cost.in_bytes + cost.out_bytes, verdict))
    return verdict


def _bisect(
    device: Device,
    make: Callable[[int], Probe],
    lo: int,
    hi: int,
    step: int,
    spec: EdgeTpuSpec,
    samples: list[Sample],
    seen: list[Observation],
    seed: int,
) -> None:
    """Bisect the size at which ``make(size)``'s big layer stops fitting (multiples of ``step``)."""
    while hi - lo > step:
        mid = (lo + hi) // 2 // step * step
        if _is_streamed(device, make(mid), spec, samples, seen, seed):
            hi = mid
        else:
            lo = mid


def cache_from(seen: Sequence[Observation]) -> tuple[float, float]:
    """``(cache_bytes, cache_io_share)`` in the middle of the region where every observation holds:
    a cached layer has ``param <= cache - share * io``, a streamed one ``param > cache - share * io``."""
    shares = np.linspace(0.0, 1.5, 3001)
    par = np.array([o[0] for o in seen], float)
    io = np.array([o[1] for o in seen], float)
    streamed = np.array([o[2] for o in seen])
    need = par[None, :] + shares[:, None] * io[None, :]  # the cache each observation bounds, per share
    lower = np.where(~streamed, need, -np.inf).max(axis=1)
    upper = np.where(streamed, need, np.inf).min(axis=1)
    gap = upper - lower
    ok = np.flatnonzero(gap > 0)
    if len(ok) == 0:  # noisy verdicts: the share that contradicts them least
        i = int(np.argmax(gap))
    else:  # the middle of the longest run of feasible shares
        runs = np.split(ok, np.flatnonzero(np.diff(ok) > 1) + 1)
        best = max(runs, key=len)
        i = int(best[len(best) // 2])
    lo, hi = lower[i], upper[i]
    cache = (lo + hi) / 2 if np.isfinite(lo) and np.isfinite(hi) else (hi if np.isfinite(hi) else lo)
    return float(cache), float(shares[i])


@dataclass(frozen=True)
class Calibration:
    """The fitted spec, every measured sample with its prediction, and how many device runs it took."""

    spec: EdgeTpuSpec
    rows: tuple[tuple[str, float, float], ...]  # (label, measured ms, predicted ms)
    measurements: int
    shared_link: str
    clock: str = ""  # how the runtime's clock was told apart


#: A fitted compute rate between these shares of the prior's (at the prior's clock) means the other clock.
_STD_SHARE = (0.35, 0.7)


def tell_clock(spec: EdgeTpuSpec, prior: EdgeTpuSpec) -> tuple[EdgeTpuSpec, str]:
    """The Edge TPU's clock from a fit made at ``prior``'s clock: the chip's compute constants are the same at
    either clock (libedgetpu1-std runs it at 250 MHz, libedgetpu1-max at 500 MHz), so compute fitted at about
    half the prior's rate, with the link and invocation costs free to differ, is the reduced clock. Returns
    ``spec`` at the clock it shows (compute constants then read at the max clock) and why."""
    shares = [
        spec.efficiency["conv"] / prior.efficiency["conv"],
        spec.efficiency["depthwise"] / prior.efficiency["depthwise"],
    ]
    share = float(np.exp(np.mean(np.log(shares))))
    slow = terms.CLOCK_SLOWDOWN["std"] / terms.CLOCK_SLOWDOWN["max"]
    if prior.clock == "max" and _STD_SHARE[0] <= share <= _STD_SHARE[1]:
        eff = {k: min(1.0, v * slow) for k, v in spec.efficiency.items()}
        return spec.with_(clock="std", efficiency=eff, elementwise_s_per_byte=spec.elementwise_s_per_byte / slow), (
            f"std (reduced clock, libedgetpu1-std): compute ran at {share:.2f} of the {prior.name} chip's rate"
        )
    return spec, f"{spec.clock}: compute ran at {share:.2f} of the {prior.name} chip's rate at its {prior.clock} clock"


def calibrate(device: Device, prior: EdgeTpuSpec = USB, seed: int = 0, name: str = "fitted") -> Calibration:
    """Run the design on ``device`` and fit every constant but the peak rate and the host-CPU ones."""
    start = device.runs
    samples = []
    for probe in design():
        data = probe.build(seed)
        samples.append(Sample(graph_of(data, probe.name), device.time_model(data, probe.name), probe.name))
    spec = fit_tile(samples, prior)
    log.info("linear constants fitted on %d probes", len(samples))
    seen: list[Observation] = []
    # cache_bytes: a dense layer (1024 * n_in bytes), with almost nothing crossing the link
    _bisect(device, _dense_filler, 256, MAX_CACHE // 1024 + 64, 16, spec, samples, seen, seed)
    # cache_io_share: a 1x1 conv (1032 * F bytes) whose output (1024 * F bytes) crosses the link
    _bisect(device, _conv_filler, 64, MAX_CACHE // 1032 + 128, 16, spec, samples, seen, seed)
    cache, share = cache_from(seen)
    spec = fit_tile(samples, spec.with_(cache_bytes=int(cache), cache_io_share=share))
    spec, clock = tell_clock(spec, prior)
    shared, how = _fit_shared_link(device, spec, seed)
    spec = spec.with_(name=name, shared_link_bytes_per_s=shared, typical_error=0.0)
    rows = tuple((s.label, s.measured_ms, p) for s, p in zip(samples, predict_ms(samples, spec)))
    return Calibration(spec, rows, device.runs - start, how, clock)


def _fit_shared_link(device: Device, spec: EdgeTpuSpec, seed: int) -> tuple[float, str]:
    """Eight copy-like stages: a shared host link shows as a period above every stage's own time."""
    probe = synth_model((1, 64, 64, 64), [Conv2D(64, 1) for _ in range(LINK_STAGES)], seed=seed, name="link")
    model = parse_model(probe, Path("link.tflite"))
    _, segments = build_segments(model, list(range(LINK_STAGES)), LINK_STAGES)
    timing = device.time_pipeline(segments, "link")
    graphs = [graph_of(s, f"link_{i}") for i, s in enumerate(segments)]
    link_bytes = sum(c.in_bytes + c.out_bytes for g in graphs for c in stage_costs(g, (0,) * g.num_ops, 1, spec))
    slowest = max(timing.stage_ms)
    if timing.period_ms <= 1.03 * slowest:
        return 0.0, (
            f"not shared: {LINK_STAGES} copy stages ran at the slowest stage's pace "
            f"({timing.period_ms:.3f} vs {slowest:.3f} ms)"
        )
    rate = terms.shared_link_rate(link_bytes, timing.period_ms / 1e3)
    return rate, (
        f"shared: {LINK_STAGES} copy stages moving {link_bytes / 1e6:.2f} MB per request ran at "
        f"{timing.period_ms:.3f} ms, above the slowest stage's {slowest:.3f} ms: {rate / 1e6:.0f} MB/s"
    )


@dataclass
class CoralDevice:
    """Real Edge TPUs: each model is compiled with ``edgetpu_compiler`` and run with :func:`hardware.coral.run_coral`."""

    devices: Sequence[str] | None = None
    runner: str = "auto"
    count: int = 30
    name: str = "coral"
    runs: int = 0

    def _run(self, models: Sequence[bytes], label: str) -> dict:
        import tempfile

        from .compiler import compile_segments
        from .coral import run_coral

        names = {f"{label}_segment_{i}_of_{len(models)}.tflite": m for i, m in enumerate(models)}
        compiled = compile_segments(names)
        with tempfile.TemporaryDirectory(prefix="respect-pass-calibrate-") as tmp:
            paths = []
            for c in compiled:
                paths.append(Path(tmp) / c.file)
                paths[-1].write_bytes(c.data)
            self.runs += 1
            return run_coral(paths, count=self.count, warmup=3, runner=self.runner, devices=self.devices)

    def time_model(self, data: bytes, label: str) -> float:
        return float(self._run([data], label)["stages"][0]["ms"])

    def time_pipeline(self, segments: Sequence[bytes], label: str) -> PipelineTiming:
        report = self._run(segments, label)
        return PipelineTiming(tuple(float(s["ms"]) for s in report["stages"]), float(report["bottleneck_ms"]))
