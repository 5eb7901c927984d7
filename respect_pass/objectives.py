"""The two objectives a plan can be scheduled for, evaluated on a stage map.

``latency`` (default): the Edge TPU cost model. A plan is better when its
bottleneck (the slowest stage, 1 / throughput) is lower, and between equal
bottlenecks when its latency (the sum of stage times) is lower.

``memory``: the RESPECT group's ILP objective (SEC'22 / ICML'24 code),
``alpha * max_k P_k + sum over the K-1 stage cuts of the number of activation
tensors crossing the cut``, where P_k is stage k's parameter bytes (distinct
constant buffers) and a tensor crosses cut k|k+1 when it is produced in a
stage <= k and read in a stage > k (a tensor that skips stages crosses each
cut it spans). ``alpha`` defaults to one crossing tensor per MiB of parameters.

Both are pure functions of (graph, stage map) and the schedulers that
optimise them (``dp``, ``exact``) are tested against these definitions.
"""

from __future__ import annotations

from collections.abc import Sequence

from hardware import EdgeTpuSpec, pipeline_period_ms, stage_costs
from tflite_io import OpGraph, RespectPassError

__all__ = ["OBJECTIVES", "DEFAULT_ALPHA", "check_objective", "latency_key", "memory_objective", "crossing_count"]

OBJECTIVES = ("latency", "memory")

#: Weight of one parameter byte against one crossing tensor in the memory objective.
DEFAULT_ALPHA = 1.0 / 2**20


def check_objective(objective: str) -> str:
    """``objective`` if known, else a RespectPassError naming the known ones."""
    if objective not in OBJECTIVES:
        raise RespectPassError(f"unknown objective '{objective}' (known: {', '.join(OBJECTIVES)})")
    return objective


def latency_key(graph: OpGraph, stages: Sequence[int], num_stages: int, spec: EdgeTpuSpec) -> tuple[float, float]:
    """(bottleneck ms, latency ms) of a valid stage map under the cost model; compare lexicographically."""
    costs = stage_costs(graph, stages, num_stages, spec)
    return pipeline_period_ms(costs, spec), sum(c.ms for c in costs)


def crossing_count(graph: OpGraph, stages: Sequence[int], num_stages: int) -> int:
    """Sum over the stage cuts of the activation tensors crossing each cut."""
    total = 0
    for t, readers in graph.consumers.items():
        src = graph.producer.get(t)
        if src is None:
            continue
        last = max(stages[r] for r in readers)
        total += max(0, last - stages[src])
    return total


def memory_objective(graph: OpGraph, stages: Sequence[int], num_stages: int, alpha: float = DEFAULT_ALPHA) -> float:
    """``alpha * max_k P_k + crossing_count``: the RESPECT ILP's objective."""
    ops_of: list[list[int]] = [[] for _ in range(num_stages)]
    for v, k in enumerate(stages):
        ops_of[k].append(v)
    max_params = max(graph.param_bytes_of(ops) for ops in ops_of)
    return alpha * max_params + crossing_count(graph, stages, num_stages)
