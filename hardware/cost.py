"""The Edge TPU device model's reference: a pure function of (OpGraph, stage map, EdgeTpuSpec).

For stage k with ops V_k (in execution order), In_k / Out_k the bytes of the
distinct activation tensors entering / leaving it over the TPU's host link
(model inputs and outputs included; :func:`link_bytes`: not a tensor only host
ops read, nor one a host op made)::

    T_k = t_invoke + sum_{v in V_k} op_seconds(v) + stream_k + (In_k + Out_k) / io_bandwidth

* :func:`op_seconds`: a conv or fully connected op costs ``macs * ceil64(Cout) / Cout / (peak *
  eff_conv)`` (the MAC array works on output channels in groups of 64), a depthwise op the same with
  ``eff_depthwise``, any other op on the Edge TPU ``output bytes * elementwise_s_per_byte``, a host
  (CPU) op (``graph.host_ops``, set by :mod:`hardware.placement`) ``cpu_op + macs / cpu_rate +
  handoff / io_bandwidth`` (the bytes it exchanges with TPU ops cross the host link);
* parameters (:func:`device_param_bytes`: the compiler's padded layer sizes, ``ceil64(Cout) *
  (kh * kw * ceil4(Cin) + 8)`` for a conv, ``ceil64(Cout) * ceil4(Cin)`` for a fully connected layer,
  ``ceil64(C) * (kh * kw + 8)`` for a depthwise one, raw bytes otherwise; a buffer read by several ops
  of the stage counts once) are cached whole layers in execution order until the usable cache
  ``cache_bytes - cache_io_share * (In_k + Out_k)`` is full; every later layer streams every inference,
  ``bytes * tiles / stream_bandwidth``, ``tiles = ceil(H * W / stream_tile_positions)`` of the
  conv's output for a conv, 1 otherwise (:func:`stream_tiles`);

The pipeline period (1 / throughput) is :func:`pipeline_period_ms`: the slowest stage and, with
``shared_link_bytes_per_s`` > 0, at least ``sum_k (In_k + Out_k) / shared_link_bytes_per_s``; the
latency of one request through an idle pipeline is the sum of the stage times.
:mod:`hardware.kernel` computes the same for every range of an order and every map at once. Both
aggregate (which ops, bytes and layers a stage holds) and leave every term's formula to
:mod:`hardware.terms`, the term table: ``T_k`` is :func:`hardware.terms.stage_seconds` of the stage's
compute, streaming and link bytes, the period :func:`hardware.terms.period_seconds`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from tflite_io import Op, OpGraph, SegmentInterface, segment_interfaces
from tflite_io.graph import distinct_constants

from . import terms
from .spec import EdgeTpuSpec, op_class
from .terms import CHANNEL_GROUP

__all__ = [
    "StageCost",
    "op_seconds",
    "host_handoff_bytes",
    "link_bytes",
    "cache_layers",
    "device_param_bytes",
    "stream_tiles",
    "stage_cost",
    "stage_costs",
    "pipeline_period_ms",
    "shared_link_ms",
    "bottleneck_ms",
    "latency_ms",
    "CHANNEL_GROUP",
]

_WEIGHTED = frozenset({"CONV_2D", "FULLY_CONNECTED", "DEPTHWISE_CONV_2D", "TRANSPOSE_CONV"})
_TILED = frozenset({"CONV_2D", "TRANSPOSE_CONV"})


def _up(x: int, m: int) -> int:
    return -(-x // m) * m


@dataclass(frozen=True)
class StageCost:
    """Breakdown of one stage's time (seconds) and bytes."""

    index: int
    compute_s: float
    overhead_s: float
    stream_s: float
    io_s: float
    param_bytes: int
    on_chip_bytes: int
    off_chip_bytes: int
    in_bytes: int
    out_bytes: int
    host_s: float = 0.0
    cpu_ops: tuple[int, ...] = ()
    #: the stage's time, :func:`hardware.terms.stage_seconds` of its parts (which add up to it)
    total_s: float = 0.0
    #: parameter bytes streamed over the host link per inference (each streamed layer times its tiles)
    streamed_bytes: int = 0

    @property
    def link_bytes(self) -> int:
        """Bytes this stage moves over the host link per request: activations in and out, streamed parameters."""
        return self.in_bytes + self.out_bytes + self.streamed_bytes

    @property
    def ms(self) -> float:
        return self.total_s * 1e3

    def as_json(self) -> dict[str, object]:
        """The per-stage record of ``run_pipeline --json`` (without measured fields)."""
        return {
            "index": self.index,
            "ms": self.ms,
            "compute_ms": self.compute_s * 1e3,
            "overhead_ms": self.overhead_s * 1e3,
            "stream_ms": self.stream_s * 1e3,
            "io_ms": self.io_s * 1e3,
            "param_bytes": self.param_bytes,
            "on_chip_bytes": self.on_chip_bytes,
            "off_chip_bytes": self.off_chip_bytes,
            "in_bytes": self.in_bytes,
            "out_bytes": self.out_bytes,
            "streamed_bytes": self.streamed_bytes,
            "host_ms": self.host_s * 1e3,
            "cpu_ops": list(self.cpu_ops),
        }


def host_handoff_bytes(graph: OpGraph, v: int) -> int:
    """Bytes host op ``v`` exchanges with Edge TPU ops: distinct activations it reads from them or writes to them."""
    tpu_made = sum(
        graph.tensors[t].nbytes
        for t in dict.fromkeys(graph.ops[v].inputs)
        if t in graph.producer and graph.producer[t] not in graph.host_ops
    )
    tpu_read = sum(
        graph.tensors[t].nbytes
        for t in graph.ops[v].outputs
        if any(r not in graph.host_ops for r in graph.consumers.get(t, ()))
    )
    return tpu_made + tpu_read


def link_bytes(graph: OpGraph, t: int, entering: bool) -> int:
    """Bytes activation ``t`` moves over a TPU's host link where it enters (``entering``) or leaves a stage:
    none when only host ops read it (it stays in host memory) or, leaving, when a host op made it."""
    if entering:
        readers = graph.consumers.get(t, ())
        return 0 if readers and all(r in graph.host_ops for r in readers) else graph.tensors[t].nbytes
    return 0 if graph.producer.get(t) in graph.host_ops else graph.tensors[t].nbytes


def _channels(graph: OpGraph, op: Op) -> int:
    """Output channels of a conv / FC / depthwise op (the last dimension of its output)."""
    shape = graph.tensors[op.outputs[0]].shape if op.outputs else ()
    return max(int(shape[-1]), 1) if shape else 1


def device_param_bytes(graph: OpGraph, op: Op) -> dict[int, int]:
    """Buffer -> bytes the compiler lays out for it: the padded layer size on the weights' buffer of a
    conv, FC, depthwise or transpose conv (bias included, so its own buffer counts 0), raw bytes otherwise;
    nothing for a host (CPU) op."""
    if op.index in graph.host_ops:  # a CPU op's constants stay in host memory
        return {}
    consts = distinct_constants(graph.tensors, op.inputs)
    if op.op_type not in _WEIGHTED or len(op.inputs) < 2:
        return {b: t.nbytes for b, t in consts.items()}
    w_index = 1
    w = graph.tensors[op.inputs[w_index]] if op.inputs[w_index] >= 0 else None
    if w is None or not w.is_constant or len(w.shape) < 2:
        return {b: t.nbytes for b, t in consts.items()}
    if op.op_type == "FULLY_CONNECTED":
        cout, cin = w.shape[0], w.shape[-1]
        padded = _up(cout, CHANNEL_GROUP) * _up(cin, 4)
    elif op.op_type == "DEPTHWISE_CONV_2D":
        c = _channels(graph, op)
        padded = _up(c, CHANNEL_GROUP) * (math.prod(w.shape[1:-1]) + 8)
    else:  # CONV_2D, TRANSPOSE_CONV: [Cout, kh, kw, Cin]
        padded = _up(w.shape[0], CHANNEL_GROUP) * (math.prod(w.shape[1:-1]) * _up(w.shape[-1], 4) + 8)
    return {b: (padded if b == w.buffer else 0) for b in consts}


def stream_tiles(graph: OpGraph, op: Op, spec: EdgeTpuSpec) -> int:
    """How often a streamed layer's weights cross the link per inference: once per spatial tile of a conv."""
    if op.op_type not in _TILED or not op.outputs:
        return 1
    shape = graph.tensors[op.outputs[0]].shape
    return terms.stream_tile_count(spec, math.prod(shape[1:-1]) if len(shape) >= 3 else 1)


def cache_layers(graph: OpGraph, ops: Sequence[int], usable: float) -> tuple[int, list[tuple[Op, int]]]:
    """The compiler's caching of a segment's parameters: whole layers in execution order while they fit
    ``usable`` bytes; from the first that does not, every later one streams. Returns the cached bytes and
    the streamed (op, bytes) pairs (each constant buffer once, at its first reader)."""
    seen: set[int] = set()
    on_chip, streamed = 0, []  # type: int, list[tuple[Op, int]]
    for v in sorted(ops):
        op = graph.ops[v]
        for buf, nbytes in device_param_bytes(graph, op).items():
            if buf in seen or nbytes == 0:
                continue
            seen.add(buf)
            if not streamed and on_chip + nbytes <= usable:
                on_chip += nbytes
            else:
                streamed.append((op, nbytes))
    return on_chip, streamed


def op_seconds(graph: OpGraph, spec: EdgeTpuSpec) -> np.ndarray:
    """Per-op time in seconds (see the module docstring): Edge TPU compute + ``t_op``, or host time."""
    out = np.empty(graph.num_ops)
    for op in graph.ops:
        if op.index in graph.host_ops:
            measured = graph.host_seconds.get(op.index)
            out[op.index] = terms.host_op_seconds(spec, op.macs, host_handoff_bytes(graph, op.index), measured)
            continue
        kind = op_class(op.op_type)
        if kind == "elementwise":
            work = terms.elementwise_seconds(spec, sum(graph.tensors[t].nbytes for t in op.outputs))
        else:
            work = terms.mac_seconds(spec, kind, op.macs, _channels(graph, op))
        out[op.index] = work + terms.op_overhead_seconds(spec)
    return out


def stage_cost(
    graph: OpGraph,
    seg: SegmentInterface,
    spec: EdgeTpuSpec,
    op_s: np.ndarray | None = None,
    cache_taken: float = 0.0,
) -> StageCost:
    """Time of one segment on one Edge TPU and its host (``op_s``: :func:`op_seconds`, computed if None);
    ``cache_taken``: cache bytes that models co-compiled before this one hold (:mod:`hardware.pool`)."""
    op_s = op_seconds(graph, spec) if op_s is None else op_s
    tpu = [v for v in seg.ops if v not in graph.host_ops]
    cpu = tuple(v for v in seg.ops if v in graph.host_ops)
    in_bytes = sum(link_bytes(graph, t, True) for t in seg.inputs)
    out_bytes = sum(link_bytes(graph, t, False) for t in seg.outputs)
    on_chip, streamed = cache_layers(
        graph, seg.ops, float(terms.usable_cache_bytes(spec, in_bytes + out_bytes, cache_taken))
    )
    off_chip = sum(nbytes for _, nbytes in streamed)
    streamed_bytes = sum(nbytes * stream_tiles(graph, op, spec) for op, nbytes in streamed)
    stream = terms.stream_seconds(spec, streamed_bytes)
    t_op = terms.op_overhead_seconds(spec)
    tpu_s, host_s = float(sum(op_s[v] for v in tpu)), float(sum(op_s[v] for v in cpu))
    return StageCost(
        index=seg.index,
        compute_s=tpu_s - len(tpu) * t_op,
        overhead_s=terms.invoke_seconds(spec) + len(tpu) * t_op,
        stream_s=stream,
        io_s=terms.link_seconds(spec, in_bytes + out_bytes),
        param_bytes=on_chip + off_chip,
        on_chip_bytes=on_chip,
        off_chip_bytes=off_chip,
        in_bytes=in_bytes,
        out_bytes=out_bytes,
        host_s=host_s,
        cpu_ops=cpu,
        total_s=float(terms.stage_seconds(spec, tpu_s + host_s, stream, in_bytes + out_bytes)),
        streamed_bytes=streamed_bytes,
    )


def stage_costs(graph: OpGraph, stages: Sequence[int], num_stages: int, spec: EdgeTpuSpec) -> tuple[StageCost, ...]:
    """Per-stage costs of a (validated) stage map."""
    op_s = op_seconds(graph, spec)
    return tuple(stage_cost(graph, seg, spec, op_s) for seg in segment_interfaces(graph, stages, num_stages))


def pipeline_period_ms(costs: Sequence[StageCost], spec: EdgeTpuSpec, replicas: Sequence[int] | None = None) -> float:
    """Steady-state period in ms (1000 / throughput), :func:`hardware.terms.period_seconds`: the slowest stage
    per replica (``replicas[k]`` TPUs run stage k; one each by default), the shared host link, or the host."""
    return (
        terms.period_seconds(
            spec,
            [c.total_s for c in costs],
            sum(c.link_bytes for c in costs),
            replicas,
            sum(c.host_s for c in costs),
        )
        * 1e3
    )


def shared_link_ms(costs: Sequence[StageCost], spec: EdgeTpuSpec) -> float:
    """The bytes all stages move per request over a shared host link (activations and streamed parameters),
    in ms (0 for separate links)."""
    return float(terms.shared_link_seconds(spec, float(sum(c.link_bytes for c in costs)))) * 1e3


def bottleneck_ms(costs: Sequence[StageCost]) -> float:
    """The slowest stage's time in ms."""
    return max(c.ms for c in costs)


def latency_ms(costs: Sequence[StageCost]) -> float:
    """End-to-end latency of one request through an empty pipeline, in ms."""
    return sum(c.ms for c in costs)
