"""The Edge TPU stage-time model: a pure function of (OpGraph, stage map, EdgeTpuSpec).

For stage k with ops V_k, parameter bytes P_k (distinct constant buffers),
and In_k / Out_k the bytes of distinct activation tensors entering / leaving
it (model inputs and outputs included)::

    T_k = t_invoke + sum_{v in V_k} macs_v / (peak * eff(class_v)) + |V_k| * t_op
          + max(0, P_k - cache) / stream_bandwidth + (In_k + Out_k) / io_bandwidth

The pipeline period (1 / throughput) is max_k T_k; the latency of one request
through an empty pipeline is sum_k T_k.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from tflite_io import OpGraph, SegmentInterface, segment_interfaces

from .spec import EdgeTpuSpec, op_class

__all__ = ["StageCost", "stage_cost", "stage_costs", "bottleneck_ms", "latency_ms"]


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

    @property
    def total_s(self) -> float:
        return self.compute_s + self.overhead_s + self.stream_s + self.io_s

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
        }


def stage_cost(graph: OpGraph, seg: SegmentInterface, spec: EdgeTpuSpec) -> StageCost:
    """Time of one segment on one Edge TPU."""
    compute = sum(
        graph.ops[v].macs / (spec.peak_macs_per_s * spec.efficiency[op_class(graph.ops[v].op_type)]) for v in seg.ops
    )
    params = seg.param_bytes
    on_chip = min(params, spec.cache_bytes)
    off_chip = params - on_chip
    in_bytes = sum(graph.tensors[t].nbytes for t in seg.inputs)
    out_bytes = sum(graph.tensors[t].nbytes for t in seg.outputs)
    return StageCost(
        index=seg.index,
        compute_s=compute,
        overhead_s=spec.t_invoke_s + len(seg.ops) * spec.t_op_s,
        stream_s=off_chip / spec.stream_bytes_per_s,
        io_s=(in_bytes + out_bytes) / spec.io_bytes_per_s,
        param_bytes=params,
        on_chip_bytes=on_chip,
        off_chip_bytes=off_chip,
        in_bytes=in_bytes,
        out_bytes=out_bytes,
    )


def stage_costs(graph: OpGraph, stages: Sequence[int], num_stages: int, spec: EdgeTpuSpec) -> tuple[StageCost, ...]:
    """Per-stage costs of a (validated) stage map."""
    return tuple(stage_cost(graph, seg, spec) for seg in segment_interfaces(graph, stages, num_stages))


def bottleneck_ms(costs: Sequence[StageCost]) -> float:
    """Steady-state pipeline period in ms (1000 / throughput)."""
    return max(c.ms for c in costs)


def latency_ms(costs: Sequence[StageCost]) -> float:
    """End-to-end latency of one request through an empty pipeline, in ms."""
    return sum(c.ms for c in costs)
