"""The ``compiler`` scheduler: what ``edgetpu_compiler --num_segments`` documents.

A contiguous split of the execution order that gives each segment roughly
equal parameter bytes, after libcoral's ParameterCountBasedPartitioner: walk
the ops in order and close segment k just before its parameter bytes would
exceed total/K (+1), never later than leaves room for one op per remaining
segment and never past the first op that produces a model output (pinned to
the last segment). Unlike libcoral (which aborts) every segment gets at least
one op.
"""
from __future__ import annotations

import time

from tflite_io import OpGraph, StageMapError, contiguous_stage_map

from ..plan import Plan

__all__ = ["compiler_schedule", "param_balanced_sizes"]


def param_balanced_sizes(graph: OpGraph, num_stages: int) -> list[int]:
    """Number of ops per segment of the parameter-balanced contiguous split."""
    n = graph.num_ops
    first_pinned = min(graph.output_ops, default=n - 1)
    if not 1 <= num_stages <= first_pinned + 1:
        raise StageMapError(
            f"cannot split {n} ops into {num_stages} contiguous segments "
            f"(the first model output is produced by op {first_pinned})",
            num_stages,
        )
    sizes = [graph.ops[i].param_bytes for i in range(n)]
    average = sum(sizes) // num_stages + 1
    counts = [0] * num_stages
    node = 0
    for k in range(num_stages - 1):
        max_end = first_pinned - (num_stages - k - 1)
        acc = 0
        while node <= max_end:
            if counts[k] > 0 and acc + sizes[node] > average:
                break
            acc += sizes[node]
            counts[k] += 1
            node += 1
    counts[-1] = n - node
    return counts


def compiler_schedule(graph: OpGraph, num_stages: int, cost: object | None = None) -> Plan:
    """Parameter-balanced contiguous split of the execution order (``cost`` is not used)."""
    t0 = time.perf_counter()
    stages = contiguous_stage_map(param_balanced_sizes(graph, num_stages))
    return Plan(stages, num_stages, "compiler", solve_seconds=time.perf_counter() - t0)
