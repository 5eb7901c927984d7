"""Stage maps: validation and the tensors that cross each segment boundary.

A stage map assigns every op of an :class:`OpGraph` to one of K pipeline
stages. It is valid for pycoral's ``PipelinedModelRunner`` when it is monotone
along every edge, every stage is non-empty, every op producing a model output
sits in the last stage (the runner returns only the last segment's outputs),
host (CPU) ops sit in the first or last stage (``OpGraph.first_stage_ops`` /
``last_stage_ops``: each segment is compiled on its own, and host ops before or
after the Edge TPU part go with the end segments, as in Google's own SSD pipelines),
and every model input is read by stage 0 (the runner pushes the model inputs
into segment 0 only, then forwards them to later consumers).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from .errors import StageMapError
from .graph import OpGraph

__all__ = ["SegmentInterface", "validate_stage_map", "segment_interfaces", "contiguous_stage_map", "max_stages"]


@dataclass(frozen=True)
class SegmentInterface:
    """The ops of one stage and the activation tensors entering and leaving it."""

    index: int
    ops: tuple[int, ...]
    inputs: tuple[int, ...]
    outputs: tuple[int, ...]
    param_bytes: int


def validate_stage_map(graph: OpGraph, stages: Sequence[int], num_stages: int) -> tuple[int, ...]:
    """Check ``stages`` is a valid ``num_stages``-stage pipeline of ``graph``; return it as a tuple.

    Raises :class:`StageMapError` naming the first violated rule and the values involved.
    """
    n = graph.num_ops
    if not 1 <= num_stages <= max(n, 1):
        raise StageMapError(
            f"number of segments must be between 1 and the {n} ops of the model, got {num_stages}", num_stages
        )
    s = tuple(int(x) for x in stages)
    if len(s) != n:
        raise StageMapError(f"stage map has {len(s)} entries for {n} ops", num_stages)
    bad = [(i, x) for i, x in enumerate(s) if not 0 <= x < num_stages]
    if bad:
        i, x = bad[0]
        raise StageMapError(f"op {i} is assigned to stage {x}, outside 0..{num_stages - 1}", num_stages)
    empty = sorted(set(range(num_stages)) - set(s))
    if empty:
        raise StageMapError(f"stage(s) {empty} are empty", num_stages)
    for e in graph.edges:
        if s[e.src] > s[e.dst]:
            raise StageMapError(
                f"precedence violated: op {e.src} (stage {s[e.src]}) produces tensor "
                f"'{graph.tensors[e.tensor].name}' read by op {e.dst} (stage {s[e.dst]})",
                num_stages,
            )
    for i in sorted(graph.last_stage_ops):
        if s[i] != num_stages - 1:
            why = (
                "produces a model output"
                if i in graph.output_ops
                else "runs on the host CPU after the Edge TPU part, so it goes with the last segment"
            )
            raise StageMapError(
                f"op {i} ({graph.ops[i].label}) {why} but is in stage {s[i]}, not the last stage {num_stages - 1}",
                num_stages,
            )
    for i in sorted(graph.first_stage_ops):
        if s[i] != 0:
            raise StageMapError(
                f"op {i} ({graph.ops[i].label}) runs on the host CPU before the Edge TPU part, so it goes with "
                f"the first segment, but is in stage {s[i]}",
                num_stages,
            )
    stage0_reads = {t for i in range(n) if s[i] == 0 for t in graph.ops[i].inputs}
    for t in graph.inputs:
        if t not in stage0_reads:
            raise StageMapError(
                f"model input '{graph.tensors[t].name}' is not read by stage 0 "
                "(PipelinedModelRunner feeds model inputs to the first segment)",
                num_stages,
            )
    return s


def segment_interfaces(graph: OpGraph, stages: Sequence[int], num_stages: int) -> tuple[SegmentInterface, ...]:
    """Per stage: its ops (execution order), input and output tensors, and parameter bytes.

    Stage 0's inputs follow the model's input order and the last stage's outputs
    the model's output order; other boundaries are sorted by tensor index.
    """
    s = validate_stage_map(graph, stages, num_stages)
    ops_of: list[list[int]] = [[] for _ in range(num_stages)]
    for i, k in enumerate(s):
        ops_of[k].append(i)
    last_reader: dict[int, int] = {}
    for t, readers in graph.consumers.items():
        last_reader[t] = max(s[r] for r in readers)
    model_inputs = set(graph.inputs)
    result = []
    for k, ops in enumerate(ops_of):
        produced = {t for i in ops for t in graph.ops[i].outputs}
        read = {t for i in ops for t in graph.ops[i].inputs if t >= 0}
        entering = {t for t in read - produced if t in model_inputs or t in graph.producer}
        if k == 0:
            inputs = tuple(t for t in graph.inputs if t in entering)
        else:
            inputs = tuple(sorted(entering))
        if k == num_stages - 1:
            outputs = tuple(graph.outputs)
        else:
            outputs = tuple(sorted(t for t in produced if last_reader.get(t, -1) > k))
        result.append(SegmentInterface(k, tuple(ops), inputs, outputs, graph.param_bytes_of(ops)))
    return tuple(result)


def contiguous_stage_map(sizes: Sequence[int]) -> tuple[int, ...]:
    """Stage map of consecutive runs of ops: ``sizes[k]`` ops go to stage k."""
    if any(x <= 0 for x in sizes):
        raise StageMapError(f"segment sizes must be positive, got {list(sizes)}", len(sizes))
    return tuple(k for k, size in enumerate(sizes) for _ in range(size))


def max_stages(graph: OpGraph) -> int:
    """The largest K for which a valid stage map may exist: one stage per op that is not tied to an end
    stage, plus the last stage (ops pinned last and their descendants) and the first (ops pinned first
    and their ancestors) when something is pinned there."""
    last = set(graph.last_stage_ops)
    for v in range(graph.num_ops):
        if v not in last and any(u in last for u in graph.preds[v]):
            last.add(v)
    first = set(graph.first_stage_ops)
    for v in reversed(range(graph.num_ops)):
        if v not in first and any(w in first for w in graph.succs[v]):
            first.add(v)
    free = graph.num_ops - len(last | first)
    return max(1, free + (1 if last else 0) + (1 if first - last else 0))
