"""The device model's term table: every term of the Edge TPU stage time, written once.

Each function takes an :class:`~hardware.spec.EdgeTpuSpec` and the quantities a term needs (bytes,
MACs, seconds), as Python floats or numpy arrays of any shape: the same expression serves the
reference (:mod:`hardware.cost`, one stage at a time) and the vectorised kernel (:mod:`hardware.kernel`
and :mod:`hardware.ranges`, every stage or range at once), and the schedulers, the policy's features,
the CP-SAT model (:func:`integer_terms`), the fitter and the tools read the constants through them,
never from the spec. What the two implementations do differently is only aggregation: which ops,
bytes and layers a stage holds.

The stage time, for a stage with TPU compute ``C`` (per-op :func:`mac_seconds` and
:func:`elementwise_seconds`), host ops ``H`` (:func:`host_op_seconds`), ``L`` bytes over its host
link and ``S`` streamed tile-bytes (every layer past the :func:`usable_cache_bytes` cache, times its
tiles)::

    T = invoke + C + H + S / stream_bandwidth + L / io_bandwidth        (:func:`stage_seconds`)

and the pipeline's period, :func:`period_seconds`: the slowest stage per replica, the shared host
link (:func:`shared_link_seconds` of every stage's activations and streamed parameters) or the host's
cores (:func:`host_bound_seconds`), whichever is longest.

Adding a term: write it here (a function of the spec and the quantities it needs), call it from
:func:`stage_seconds` or :func:`period_seconds` (or from the per-op time in :mod:`hardware.cost`),
and give the reference and the kernel the quantity it needs; docs/ARCHITECTURE.md has a worked
example, and ``tests/test_terms.py`` one that adds a term by touching only ``hardware/``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from fractions import Fraction
from typing import TypeVar

import numpy as np

from .spec import CLOCK_SLOWDOWN, EdgeTpuSpec

__all__ = [
    "CHANNEL_GROUP",
    "IntegerTerms",
    "cache_bytes",
    "clock_slowdown",
    "elementwise_seconds",
    "host_op_seconds",
    "integer_terms",
    "invoke_seconds",
    "link_seconds",
    "mac_seconds",
    "op_overhead_seconds",
    "one_tpu_terms",
    "OneTpuTerms",
    "own_seconds",
    "period_seconds",
    "reload_seconds",
    "switch_seconds",
    "shared_link_per_byte",
    "host_bound_seconds",
    "shared_link_rate",
    "shared_link_seconds",
    "stage_seconds",
    "stream_seconds",
    "stream_tile_count",
    "usable_cache_bytes",
]

#: The MAC array's width: output channels are padded to multiples of this (compiler memory reports, conv sweep).
CHANNEL_GROUP = 64

X = TypeVar("X", float, np.ndarray)


def cache_bytes(spec: EdgeTpuSpec) -> int:
    """The parameter cache with nothing crossing the host link, in bytes."""
    return spec.cache_bytes


def invoke_seconds(spec: EdgeTpuSpec) -> float:
    """The fixed cost of one invocation of a segment (the runtime's call, the TPU's start)."""
    return spec.t_invoke_s


def mac_seconds(spec: EdgeTpuSpec, kind: str, macs: X, channels: X) -> X:
    """A conv, FC or depthwise op's time: ``macs`` at the peak rate times the class's efficiency, the MAC
    array working on ``channels`` output channels padded to :data:`CHANNEL_GROUP`."""
    padded = -(-channels // CHANNEL_GROUP) * CHANNEL_GROUP
    return macs * (padded / channels) * clock_slowdown(spec) / (spec.peak_macs_per_s * spec.efficiency[kind])


def elementwise_seconds(spec: EdgeTpuSpec, out_bytes: X) -> X:
    """Any other TPU op's time (element-wise, pooling, concatenation, reshape): per output byte."""
    return out_bytes * (spec.elementwise_s_per_byte * clock_slowdown(spec))


def clock_slowdown(spec: EdgeTpuSpec) -> float:
    """How much longer TPU compute takes at the spec's runtime clock than at the max clock (1 at max)."""
    return CLOCK_SLOWDOWN[spec.clock]


def op_overhead_seconds(spec: EdgeTpuSpec) -> float:
    """A fixed cost per TPU op (0 in the presets)."""
    return spec.t_op_s


def host_op_seconds(spec: EdgeTpuSpec, macs: X, handoff_bytes: X, measured_s: float | None = None) -> X:
    """A host (CPU) op's time on the spec's host: its own time (``measured_s``, measured on the planning
    machine, or else the table: a dispatch cost and its MACs (or elements) at the host rate) times
    ``host_op_scale``, plus the bytes it exchanges with TPU ops over the host link."""
    own = spec.cpu_op_s + macs / spec.cpu_macs_per_s if measured_s is None else measured_s
    return own * spec.host_op_scale + link_seconds(spec, handoff_bytes)


def usable_cache_bytes(spec: EdgeTpuSpec, link_bytes: X, taken: float = 0.0) -> X:
    """The cache left for parameters where a stage moves ``link_bytes`` over its host link and the models
    co-compiled before it (:mod:`hardware.pool`) took ``taken`` bytes of it."""
    return np.maximum(spec.cache_bytes - spec.cache_io_share * link_bytes - taken, 0.0)


def reload_seconds(spec: EdgeTpuSpec, reload_bytes: X) -> X:
    """Reloading ``reload_bytes`` of cached parameters over the link when a TPU switches to a model that is not
    co-compiled with the one it ran before: the streaming bandwidth times ``reload_rate_factor``."""
    return reload_bytes / (spec.stream_bytes_per_s * spec.reload_rate_factor)


def switch_seconds(spec: EdgeTpuSpec, reload_bytes: X) -> X:
    """A TPU's switch to another model: the fixed cost of any switch (``t_switch_s``) plus the reload of
    ``reload_bytes`` (:func:`reload_seconds`; 0 between co-compiled models, which keep their caches)."""
    return spec.t_switch_s + reload_seconds(spec, reload_bytes)


def stream_tile_count(spec: EdgeTpuSpec, positions: int) -> int:
    """How often a streamed conv's weights cross the link per inference: once per spatial tile."""
    return max(1, -(-positions // spec.stream_tile_positions))


def stream_seconds(spec: EdgeTpuSpec, tile_bytes: X) -> X:
    """Streaming ``tile_bytes`` (streamed bytes times their tiles) from host memory."""
    return tile_bytes / spec.stream_bytes_per_s


def link_seconds(spec: EdgeTpuSpec, link_bytes: X) -> X:
    """Moving ``link_bytes`` of activations over one TPU's own host link (times the reciprocal bandwidth:
    the range matrices add it to every range in one pass)."""
    return link_bytes * (1.0 / spec.io_bytes_per_s)


def stage_seconds(spec: EdgeTpuSpec, compute_s: X, stream_s: X, link_bytes: X) -> X:
    """A stage's time: one invocation, its compute (TPU and host ops), its streamed parameters
    (:func:`stream_seconds`) and its host-link activations."""
    return spec.t_invoke_s + compute_s + stream_s + link_seconds(spec, link_bytes)


def shared_link_per_byte(spec: EdgeTpuSpec) -> float:
    """Seconds per byte of the host controller the TPUs share (0 where each has its own link)."""
    return 1.0 / spec.shared_link_bytes_per_s if spec.shared_link_bytes_per_s > 0 else 0.0


def shared_link_seconds(spec: EdgeTpuSpec, link_bytes: X) -> X:
    """The time the shared host controller needs per request for ``link_bytes`` (all stages' link bytes
    added up); 0 where each TPU has its own link."""
    return link_bytes * shared_link_per_byte(spec)


def shared_link_rate(link_bytes: float, period_s: float) -> float:
    """The shared controller's bandwidth that makes :func:`shared_link_seconds` of ``link_bytes`` equal
    ``period_s`` (the term inverted, for a fit to a measured period)."""
    return link_bytes / period_s


def host_bound_seconds(spec: EdgeTpuSpec, host_s: X) -> X:
    """The least period the host allows: ``host_s`` of host ops per request over its cores."""
    return host_s / spec.host_cores


def period_seconds(
    spec: EdgeTpuSpec,
    stage_s: np.ndarray | Sequence[float],
    link_bytes: float,
    replicas: np.ndarray | Sequence[int] | None = None,
    host_s: float = 0.0,
) -> float:
    """The pipeline's period (1 / throughput): the slowest stage, a stage of ``r`` replicas taking ``1 / r``
    of its time per request (each request goes to one replica); never below the shared host link moving
    ``link_bytes`` per request (every stage's activations and streamed parameters, added up: replicas do
    not reduce them) nor the host's own limit (:func:`host_bound_seconds` of ``host_s``, the host ops'
    time per request)."""
    per_request = np.asarray(stage_s, dtype=np.float64)
    if replicas is not None:
        per_request = per_request / np.asarray(replicas, dtype=np.float64)
    return max(
        float(np.max(per_request)), float(shared_link_seconds(spec, float(link_bytes))), host_bound_seconds(spec, host_s)
    )


def own_seconds(spec: EdgeTpuSpec, op_s: X, param_bytes: X) -> X:
    """An op's time on its own, pessimistically: its compute plus its parameters streamed once."""
    return op_s + stream_seconds(spec, param_bytes)


@dataclass(frozen=True)
class OneTpuTerms:
    """A whole graph as one stage on one TPU (:func:`one_tpu_terms`): the scale the policy's features
    divide times and bytes by. ``cache`` is the cache in bytes (at least 1)."""

    cache: float
    invoke_s: float
    compute_s: float
    stream_s: float
    link_s: float
    total_s: float


def one_tpu_terms(spec: EdgeTpuSpec, compute_s: float, param_bytes: float, link_bytes: float) -> OneTpuTerms:
    """The terms of a graph with ``compute_s`` of compute, ``param_bytes`` of parameters and ``link_bytes``
    of model inputs and outputs run as one stage: what exceeds the cache streams once."""
    cache = max(float(spec.cache_bytes), 1.0)
    stream = stream_seconds(spec, max(0.0, param_bytes - cache))
    return OneTpuTerms(
        cache=cache,
        invoke_s=spec.t_invoke_s,
        compute_s=compute_s,
        stream_s=stream,
        link_s=link_seconds(spec, link_bytes),
        total_s=stage_seconds(spec, compute_s, stream, link_bytes),
    )


@dataclass(frozen=True)
class IntegerTerms:
    """The stage-time terms in whole time units, for a CP-SAT model (:func:`integer_terms`).

    One unit is ``unit_s`` seconds; a byte over a TPU's own link costs ``link`` units, a streamed byte
    ``stream`` units, a byte over the shared controller ``shared_link`` (0: separate links); ``invoke``
    units per stage; ``op`` units per op; the usable cache is ``cache - share * link bytes``."""

    unit_s: float
    link: int
    stream: int
    shared_link: int
    invoke: int
    op: tuple[int, ...]
    cache: int
    share: Fraction
    horizon: int
    host_floor: int = 0  # the host's bound on the period, rounded down (a valid lower bound)


def integer_terms(
    spec: EdgeTpuSpec,
    op_s: np.ndarray,
    num_stages: int,
    param_bytes: float,
    max_tiles: int,
    act_bytes: float,
    host_s: float = 0.0,
) -> IntegerTerms:
    """:class:`IntegerTerms` with the largest unit multiplier ``M`` (a power of two <= 2**20) that keeps
    every sum of stage times below 2**53: one unit is ``1 / (io_bandwidth * M)`` s, so activation bytes
    cost exactly M units each. ``horizon`` bounds any plan's stage time in units; it is computed from
    ``num_stages``, the graph's ``param_bytes`` streamed ``max_tiles`` times and its ``act_bytes``;
    ``host_floor`` is the host's bound on the period for ``host_s`` of host ops, rounded down."""
    K = num_stages
    upper_s = (
        K * spec.t_invoke_s
        + float(op_s.sum())
        + K * param_bytes * max_tiles / spec.stream_bytes_per_s
        + 2 * K * act_bytes / spec.io_bytes_per_s
        + (2 * K * act_bytes / spec.shared_link_bytes_per_s if spec.shared_link_bytes_per_s > 0 else 0.0)
    )
    mult = 2**20
    while mult > 1 and upper_s * spec.io_bytes_per_s * mult > 2**53:
        mult //= 2
    unit_s = 1.0 / (spec.io_bytes_per_s * mult)
    return IntegerTerms(
        unit_s=unit_s,
        link=mult,
        stream=round(mult * spec.io_bytes_per_s / spec.stream_bytes_per_s),
        shared_link=round(mult * spec.io_bytes_per_s * shared_link_per_byte(spec)),
        invoke=round(spec.t_invoke_s / unit_s),
        op=tuple(round(float(t) / unit_s) for t in op_s),
        cache=spec.cache_bytes,
        share=Fraction(spec.cache_io_share).limit_denominator(1000),
        horizon=round(upper_s / unit_s) + 1,
        host_floor=int(host_bound_seconds(spec, host_s) / unit_s),
    )
