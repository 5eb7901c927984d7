"""The Plan every scheduler returns, and its ``<stem>_plan.json`` form."""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from hardware import StageCost
from tflite_io import OpGraph, SegmentInterface

__all__ = ["Plan", "PlanStats", "StatValue", "plan_json", "REL_TOL", "close"]

#: Relative tolerance below which two costs count as equal (ties between plans, bounds met), everywhere.
REL_TOL = 1e-9

StatValue = int | float | str


def close(a: float, b: float) -> bool:
    """``a`` and ``b`` equal within :data:`REL_TOL` (relative)."""
    return abs(a - b) <= REL_TOL * max(abs(a), abs(b), 1e-300)


class PlanStats(Mapping[str, StatValue]):
    """A scheduler's counters (``scheduler_stats`` in plan.json): an immutable mapping with typed reads.

    ``stats.number("bottleneck_ms")`` is a float (a TypeError if the value is text), ``stats.text(k)`` a
    string; ``stats.with_(orders=12)`` a copy with more counters. Built from a mapping or (key, value) pairs.
    """

    __slots__ = ("_items",)

    def __init__(self, items: Mapping[str, StatValue] | Iterable[tuple[str, StatValue]] = (), **more: StatValue) -> None:
        self._items: dict[str, StatValue] = {**dict(items), **more}

    def __getitem__(self, key: str) -> StatValue:
        return self._items[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._items)

    def __len__(self) -> int:
        return len(self._items)

    def __hash__(self) -> int:
        return hash(tuple(self._items.items()))

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Mapping) and dict(self._items) == dict(other)

    def __repr__(self) -> str:
        return f"PlanStats({self._items!r})"

    def number(self, key: str, default: float | None = None) -> float:
        """The counter ``key`` as a float (``default`` when absent and given)."""
        if key not in self._items and default is not None:
            return default
        value = self._items[key]
        if isinstance(value, str):
            raise TypeError(f"scheduler stat {key!r} is text ({value!r}), not a number")
        return float(value)

    def text(self, key: str, default: str | None = None) -> str:
        """The counter ``key`` as a string (``default`` when absent and given)."""
        if key not in self._items and default is not None:
            return default
        return str(self._items[key])

    def with_(self, **more: StatValue) -> PlanStats:
        """A copy with the counters ``more`` added or replaced."""
        return PlanStats({**self._items, **more})


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
    stats: PlanStats = field(default_factory=PlanStats)
    #: the shared host link's bound on the period (:func:`hardware.cost.shared_link_ms`; 0 for separate links)
    link_ms: float = 0.0
    #: TPUs running each stage (replicas of its segment; empty: one each) and the TPUs the plan was made for
    #: (0: one per stage)
    replicas: tuple[int, ...] = ()
    tpus: int = 0
    #: the device model's period (:func:`hardware.cost.pipeline_period_ms`), set with ``stage_ms``
    period_ms: float | None = None
    #: the index of the plan's first TPU in a pool of several models (``respect-pass pool``; 0 alone)
    first_tpu: int = 0

    def __post_init__(self) -> None:
        if not isinstance(self.stats, PlanStats):  # (key, value) pairs or a dict
            object.__setattr__(self, "stats", PlanStats(self.stats))

    @property
    def stage_replicas(self) -> tuple[int, ...]:
        """TPUs of each stage (one each unless the plan replicates stages)."""
        return self.replicas or (1,) * self.num_stages

    @property
    def num_tpus(self) -> int:
        """TPUs the plan uses: the sum of its stages' replicas, or the TPUs it was made for if more."""
        return max(self.tpus, sum(self.stage_replicas))

    def devices(self) -> tuple[tuple[int, ...], ...]:
        """TPU indices of each stage: stage 0's replicas first, then stage 1's, ... (from :attr:`first_tpu`)"""
        out, first = [], self.first_tpu
        for r in self.stage_replicas:
            out.append(tuple(range(first, first + r)))
            first += r
        return tuple(out)

    @property
    def predicted_bottleneck_ms(self) -> float | None:
        """The predicted period (the device model's, when set; else the slowest stage or the shared link)."""
        if self.period_ms is not None:
            return self.period_ms
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
        "tpus": plan.num_tpus,
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
                "replicas": plan.stage_replicas[seg.index],
                "devices": list(plan.devices()[seg.index]),
                "inputs": [names[t].name for t in seg.inputs],
                "outputs": [names[t].name for t in seg.outputs],
                **(
                    {
                        "cpu_ops": list(costs[seg.index].cpu_ops),
                        "predicted_host_ms": costs[seg.index].host_s * 1e3,
                        # one parameter figure everywhere: the bytes the compiler lays out on the device (padded
                        # layers, as the plot and run_pipeline show); the model's own bytes beside it
                        "param_bytes": costs[seg.index].param_bytes,
                        "model_param_bytes": seg.param_bytes,
                    }
                    if costs is not None
                    else {}
                ),
            }
            for seg in interfaces
        ],
    }
