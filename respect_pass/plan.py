"""The Plan every scheduler returns, and its ``<stem>_plan.json`` form."""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from tflite_io import OpGraph, SegmentInterface

from hardware import StageCost

__all__ = ["Plan", "plan_json"]


@dataclass(frozen=True)
class Plan:
    """A K-stage schedule of one OpGraph.

    ``stages[i]`` is the pipeline stage of op i. Fields a scheduler cannot
    fill (a prediction without a cost model, optimality of a heuristic) are None.
    """

    stages: tuple[int, ...]
    num_stages: int
    scheduler: str
    objective: str = "latency"
    stage_ms: tuple[float, ...] | None = None
    optimal: bool | None = None
    lower_bound_ms: float | None = None
    solve_seconds: float = 0.0
    stats: tuple[tuple[str, int | float | str], ...] = ()
    #: the shared host link's bound on the period (:func:`hardware.cost.shared_link_ms`; 0 for separate links)
    link_ms: float = 0.0

    @property
    def predicted_bottleneck_ms(self) -> float | None:
        """The predicted period: the slowest stage, or the shared host link."""
        return max(max(self.stage_ms), self.link_ms) if self.stage_ms else None

    @property
    def predicted_latency_ms(self) -> float | None:
        return sum(self.stage_ms) if self.stage_ms else None

    def ops_of(self, stage: int) -> tuple[int, ...]:
        """Op indices of ``stage`` in execution order."""
        return tuple(i for i, s in enumerate(self.stages) if s == stage)


def plan_json(
    plan: Plan,
    graph: OpGraph,
    interfaces: Sequence[SegmentInterface],
    files: Sequence[str],
    model: str,
    costs: Sequence[StageCost] | None = None,
) -> dict[str, Any]:
    """The ``<stem>_plan.json`` document (keys as in DESIGN.md).

    With ``costs`` every segment also lists its host (CPU) ops (``cpu_ops``, original op indices) and
    their predicted time (``predicted_host_ms``).
    """
    names = graph.tensors
    return {
        "model": model,
        "num_segments": plan.num_stages,
        "scheduler": plan.scheduler,
        "objective": plan.objective,
        "predicted_bottleneck_ms": plan.predicted_bottleneck_ms,
        "predicted_latency_ms": plan.predicted_latency_ms,
        "optimal": plan.optimal,
        "lower_bound_ms": plan.lower_bound_ms,
        "shared_link_ms": plan.link_ms,
        "solve_seconds": round(plan.solve_seconds, 6),
        "scheduler_stats": dict(plan.stats),
        "segments": [
            {
                "index": seg.index,
                "file": files[seg.index],
                "ops": list(seg.ops),
                "param_bytes": seg.param_bytes,
                "predicted_ms": plan.stage_ms[seg.index] if plan.stage_ms else None,
                "inputs": [names[t].name for t in seg.inputs],
                "outputs": [names[t].name for t in seg.outputs],
                **({"cpu_ops": list(costs[seg.index].cpu_ops), "predicted_host_ms": costs[seg.index].host_s * 1e3}
                   if costs is not None else {}),
            }
            for seg in interfaces
        ],
    }
