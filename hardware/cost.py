"""The Edge TPU stage-time model: a pure function of (OpGraph, stage map, EdgeTpuSpec).

For stage k with ops V_k, parameter bytes P_k (distinct constant buffers),
and In_k / Out_k the bytes of distinct activation tensors entering / leaving
it (model inputs and outputs included)::

    T_k = t_invoke + sum_{v in V_k} op_seconds(v)
          + max(0, P_k - cache) / stream_bandwidth + (In_k + Out_k) / io_bandwidth

where :func:`op_seconds` is, for an op on the Edge TPU, ``macs_v / (peak *
eff(class_v)) + t_op`` and, for a host (CPU) op (``graph.host_ops``, set by
:mod:`hardware.placement`), ``cpu_op + macs_v / cpu_rate + handoff_v /
io_bandwidth``: its host time plus the bytes it exchanges with TPU ops
(activations it reads from them and writes to them), which cross the host
link. Every scheduler, the range-cost matrices and the policy's features take
per-op times from :func:`op_seconds`, so this is the one place they are defined.

The pipeline period (1 / throughput) is max_k T_k; the latency of one request
through an empty pipeline is sum_k T_k.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from tflite_io import OpGraph, SegmentInterface, segment_interfaces

from .spec import EdgeTpuSpec, op_class

__all__ = ["StageCost", "op_seconds", "host_handoff_bytes", "stage_cost", "stage_costs", "bottleneck_ms", "latency_ms"]


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

    @property
    def total_s(self) -> float:
        return self.compute_s + self.overhead_s + self.stream_s + self.io_s + self.host_s

    @property
    def ms(self) -> float:
        return self.total_s * 1e3

    def as_json(self) -> dict[str, float | int]:
        """The per-stage record of ``run_pipeline --json`` (without measured fields)."""
        return {
            "index": self.index, "ms": self.ms, "compute_ms": self.compute_s * 1e3,
            "overhead_ms": self.overhead_s * 1e3, "stream_ms": self.stream_s * 1e3, "io_ms": self.io_s * 1e3,
            "param_bytes": self.param_bytes, "on_chip_bytes": self.on_chip_bytes,
            "off_chip_bytes": self.off_chip_bytes, "in_bytes": self.in_bytes, "out_bytes": self.out_bytes,
            "host_ms": self.host_s * 1e3, "cpu_ops": list(self.cpu_ops),
        }


def host_handoff_bytes(graph: OpGraph, v: int) -> int:
    """Bytes host op ``v`` exchanges with Edge TPU ops: distinct activations it reads from them or writes to them."""
    tpu_made = sum(graph.tensors[t].nbytes for t in dict.fromkeys(graph.ops[v].inputs)
                   if t in graph.producer and graph.producer[t] not in graph.host_ops)
    tpu_read = sum(graph.tensors[t].nbytes for t in graph.ops[v].outputs
                   if any(r not in graph.host_ops for r in graph.consumers.get(t, ())))
    return tpu_made + tpu_read


def op_seconds(graph: OpGraph, spec: EdgeTpuSpec) -> np.ndarray:
    """Per-op time in seconds: Edge TPU compute + ``t_op``, or host time + hand-off bytes for host ops."""
    out = np.empty(graph.num_ops)
    for op in graph.ops:
        if op.index in graph.host_ops:
            out[op.index] = (spec.cpu_op_s + op.macs / spec.cpu_macs_per_s
                             + host_handoff_bytes(graph, op.index) / spec.io_bytes_per_s)
        else:
            out[op.index] = op.macs / (spec.peak_macs_per_s * spec.efficiency[op_class(op.op_type)]) + spec.t_op_s
    return out


def stage_cost(graph: OpGraph, seg: SegmentInterface, spec: EdgeTpuSpec, op_s: np.ndarray | None = None) -> StageCost:
    """Time of one segment on one Edge TPU and its host (``op_s``: :func:`op_seconds`, computed if None)."""
    op_s = op_seconds(graph, spec) if op_s is None else op_s
    tpu = [v for v in seg.ops if v not in graph.host_ops]
    cpu = tuple(v for v in seg.ops if v in graph.host_ops)
    compute = float(sum(op_s[v] for v in tpu)) - len(tpu) * spec.t_op_s
    params = seg.param_bytes
    on_chip = min(params, spec.cache_bytes)
    off_chip = params - on_chip
    in_bytes = sum(graph.tensors[t].nbytes for t in seg.inputs)
    out_bytes = sum(graph.tensors[t].nbytes for t in seg.outputs)
    return StageCost(
        index=seg.index,
        compute_s=compute,
        overhead_s=spec.t_invoke_s + len(tpu) * spec.t_op_s,
        stream_s=off_chip / spec.stream_bytes_per_s,
        io_s=(in_bytes + out_bytes) / spec.io_bytes_per_s,
        param_bytes=params,
        on_chip_bytes=on_chip,
        off_chip_bytes=off_chip,
        in_bytes=in_bytes,
        out_bytes=out_bytes,
        host_s=float(sum(op_s[v] for v in cpu)),
        cpu_ops=cpu,
    )


def stage_costs(graph: OpGraph, stages: Sequence[int], num_stages: int, spec: EdgeTpuSpec) -> tuple[StageCost, ...]:
    """Per-stage costs of a (validated) stage map."""
    op_s = op_seconds(graph, spec)
    return tuple(stage_cost(graph, seg, spec, op_s) for seg in segment_interfaces(graph, stages, num_stages))


def bottleneck_ms(costs: Sequence[StageCost]) -> float:
    """Steady-state pipeline period in ms (1000 / throughput)."""
    return max(c.ms for c in costs)


def latency_ms(costs: Sequence[StageCost]) -> float:
    """End-to-end latency of one request through an empty pipeline, in ms."""
    return sum(c.ms for c in costs)
