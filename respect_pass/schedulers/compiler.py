"""The ``compiler`` scheduler: libcoral's ParameterCountBasedPartitioner, for ``edgetpu_compiler --num_segments``.

(edgetpu_compiler is closed source; libcoral's partitioner is the open reference for its split.)
libcoral (google-coral/libcoral, ``coral/tools/partitioner/parameter_count_based_partitioner.cc``,
``utils.cc``, ``strategy.cc``):

* ops are put in libcoral's ``TopologicalSort`` order (``respect_pass.orders.libcoral_topological_order``);
* each op's parameter size is the byte size of every constant input it reads (custom ops: 0);
* the target per segment is ``total // K + 1``; segment k takes ops in order while its parameter bytes
  stay <= the target, but ends at position ``first_sink - (K - k - 1)`` at the latest, where
  ``first_sink`` is the first op in that order whose output nobody consumes; the last segment takes the
  rest (so it starts at or before the first sink);
* it aborts on a CHECK when there are fewer than K - 1 ops before the first sink, when a segment comes
  out empty (an op alone larger than the target), when a (non-custom) op reads only constants, and,
  while cutting the model (``GetStrategyFromNumOps``), when an op whose output leaves its segment has
  more than one output tensor.

This scheduler returns libcoral's split where libcoral gives one and it is a valid pipeline. Where libcoral
would abort, the same loop runs with "every segment takes at least one op" if libcoral's loop itself fails
(the only change), and ``scheduler_stats`` says ``libcoral_would_abort: true`` with the failing CHECK in
``libcoral_outcome``. Where libcoral's split breaks a pipeline rule libcoral does not know (an op pinned to
the last stage that is not a sink, host ops pinned to the first or last stage, a model input no first-stage
op reads), the cuts are moved the least needed (``scheduler_stats.correction``); if libcoral's order has no
valid split at all, the ops pinned last (with their descendants) are moved to the end of the order and those
pinned first (with their ancestors) to its front.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass

from tflite_io import OpGraph, StageMapError

from ..orders import libcoral_topological_order, split_order
from ..plan import Plan, PlanStats

__all__ = [
    "CompilerSplit",
    "compiler_schedule",
    "compiler_split",
    "libcoral_num_ops_per_segment",
    "libcoral_parameter_sizes",
    "libcoral_split",
    "libcoral_strategy_check",
    "param_balanced_sizes",
    "pipeline_cut_bounds",
]


@dataclass(frozen=True)
class CompilerSplit:
    """The compiler scheduler's split: ``num_ops[k]`` consecutive ops of ``order`` in segment k.

    ``libcoral_num_ops`` is libcoral's own answer (None where it aborts), ``libcoral_abort`` the CHECK it
    fails (None where it does not), ``correction`` how the split was changed into a valid pipeline.
    """

    order: tuple[int, ...]
    num_ops: tuple[int, ...]
    libcoral_num_ops: tuple[int, ...] | None
    libcoral_abort: str | None
    correction: str | None

    @property
    def cuts(self) -> list[int]:
        return [sum(self.num_ops[:k]) for k in range(1, len(self.num_ops))]

    def stages(self) -> tuple[int, ...]:
        return split_order(self.order, self.cuts, len(self.order))


def libcoral_parameter_sizes(graph: OpGraph) -> list[int]:
    """``CalculateParameterSizes``: bytes of each constant input an op reads (each read counted), custom ops 0.

    (Omitted optional inputs, index -1, are skipped; libcoral would index the tensor table with -1.)
    """
    sizes = []
    for op in graph.ops:
        if op.op_type == "CUSTOM":
            sizes.append(0)
        else:
            sizes.append(sum(graph.tensors[t].nbytes for t in op.inputs if t >= 0 and graph.tensors[t].is_constant))
    return sizes


def libcoral_num_ops_per_segment(
    sizes: Sequence[int], order: Sequence[int], first_sink: int, num_segments: int, at_least_one: bool = False
) -> tuple[list[int], str | None]:
    """``GetNumOpsPerSegment``'s loop over ``order``: (ops per segment, the CHECK libcoral fails or None).

    With ``at_least_one`` every segment takes its first op whatever its size, and may run up to
    ``max(first_sink, num_segments - 1)`` (room for one op per segment): our correction where libcoral aborts.
    """
    n = len(order)
    total = sum(sizes[v] for v in order)
    average = total // num_segments + 1
    limit = max(first_sink, num_segments - 1) if at_least_one else first_sink
    counts = [0] * num_segments
    seg_size = [0] * num_segments
    node = 0
    for k in range(num_segments - 1):
        max_end = limit - (num_segments - k - 1)
        if max_end < node:
            return counts, (
                f"CHECK_GE(max_segment_end_exe_idx, node_i) failed: {first_sink} ops before the first "
                f"op nobody consumes, fewer than the {num_segments - 1} segments before the last"
            )
        while node <= max_end:
            cur = sizes[order[node]]
            if seg_size[k] + cur > average and not (at_least_one and counts[k] == 0):
                break
            seg_size[k] += cur
            counts[k] += 1
            node += 1
    counts[-1] = n - node
    empty = [k for k, c in enumerate(counts) if c <= 0]
    if empty:
        v = order[node] if node < n else None
        return counts, (
            f"CHECK_GT(num_ops_per_segment[{empty[0]}], 0) failed: segment {empty[0]} is empty "
            f"(op {v} alone has {sizes[v] if v is not None else 0} parameter bytes, more than the "
            f"{average} per segment)"
        )
    return counts, None


def libcoral_strategy_check(graph: OpGraph, order: Sequence[int], num_ops: Sequence[int]) -> str | None:
    """``GetStrategyFromNumOps``'s CHECKs on a split of ``order``: the failing one, or None.

    Besides the op counts (each > 0, summing to the model's ops, K <= ops), every op producing a tensor
    that enters another segment, and every op whose output leaves its segment or that has no consumer
    (except the model's last op), must have exactly one output tensor.
    """
    n, num_segments = graph.num_ops, len(num_ops)
    if num_segments <= 1:
        return "CHECK_GT(num_segments, 1) failed: num_segments must be >1"
    if any(c <= 0 for c in num_ops):
        return "CHECK_GT(num_ops, 0) failed: each segment needs at least one operator"
    if num_segments > n:
        return f"CHECK_LE(num_segments, num_nodes) failed: {num_segments} > {n}"
    if sum(num_ops) != n:
        return (
            f"CHECK_EQ(sum of num_ops, num_nodes) failed: {sum(num_ops)} != {n} (Sum of num_segment_ops must "
            "be equal to model's nodes number)"
        )
    seg = [0] * n
    start = 0
    for k, c in enumerate(num_ops):
        for v in order[start : start + c]:
            seg[v] = k
        start += c
    for v in range(n):
        outs = len(graph.ops[v].outputs)
        if outs == 1:
            continue
        crosses = any(seg[w] != seg[v] for w in graph.succs[v])
        if crosses or (not graph.succs[v] and v < n - 1):
            return (
                f"CHECK_EQ(outputs size, 1) failed: op {v} ({graph.ops[v].label}) has {outs} output tensors "
                "and its outputs leave its segment (Only one output tensor per operator)"
            )
    return None


def pipeline_cut_bounds(graph: OpGraph, order: Sequence[int]) -> tuple[int, int]:
    """(lo, hi): a split of ``order`` is a valid pipeline iff its first cut is >= lo and its last cut <= hi.

    lo: after the first reader of every model input and every op pinned to the first stage; hi: at or before
    the first op pinned to the last stage.
    """
    pos = {v: i for i, v in enumerate(order)}
    firsts = [min(pos[c] for c in graph.consumers[t]) for t in graph.inputs if graph.consumers.get(t)]
    firsts += [pos[v] for v in graph.first_stage_ops]
    lo = max(firsts, default=0) + 1
    hi = min((pos[v] for v in graph.last_stage_ops), default=len(order) - 1)
    return lo, hi


def _first_sink(graph: OpGraph, order: Sequence[int]) -> int:
    """Position in ``order`` of the first op whose output no op consumes."""
    return next(i for i, v in enumerate(order) if not graph.succs[v])


def _clamp_cuts(cuts: list[int], lo: int, hi: int) -> list[int] | None:
    """The cuts moved the least into [lo, hi] keeping them strictly increasing; None if impossible."""
    m = len(cuts)
    if m and lo + m - 1 > hi:
        return None
    return [min(max(c, lo + i), hi - (m - 1 - i)) for i, c in enumerate(cuts)]


def _pinned_order(graph: OpGraph, order: Sequence[int]) -> list[int]:
    """``order`` with the ops pinned first (and their ancestors, and each model input's first reader) moved
    to the front and the ops pinned last (and their descendants) to the end, relative order kept."""
    pos = {v: i for i, v in enumerate(order)}
    last = set(graph.last_stage_ops)
    for v in sorted(order, key=pos.__getitem__):
        if any(u in last for u in graph.preds[v]):
            last.add(v)
    first = set(graph.first_stage_ops)
    first |= {min(graph.consumers[t], key=pos.__getitem__) for t in graph.inputs if graph.consumers.get(t)}
    for v in sorted(order, key=pos.__getitem__, reverse=True):
        if any(w in first for w in graph.succs[v]):
            first.add(v)
    first -= last
    return (
        [v for v in order if v in first]
        + [v for v in order if v not in first and v not in last]
        + [v for v in order if v in last]
    )


def libcoral_split(
    graph: OpGraph, num_stages: int, order: Sequence[int] | None = None, sizes: Sequence[int] | None = None
) -> tuple[list[int], str | None]:
    """What libcoral's ``GetStrategy(num_stages)`` does: (ops per segment along ``order``, the CHECK it fails).

    ``order`` defaults to libcoral's TopologicalSort. The counts are meaningful only where nothing fails.
    """
    order = libcoral_topological_order(graph) if order is None else list(order)
    sizes = libcoral_parameter_sizes(graph) if sizes is None else sizes
    if num_stages <= 1:
        return [graph.num_ops], "CHECK_GT(num_segments, 1) failed: num_segments must be >1"
    weights_only = [
        op.index
        for op in graph.ops
        if op.op_type != "CUSTOM" and not any(t >= 0 and not graph.tensors[t].is_constant for t in op.inputs)
    ]
    if weights_only:
        v = weights_only[0]
        return [], (
            f"CHECK_GT(num_non_weight_tensors, 0) failed in CalculateParameterSizes: op {v} "
            f"({graph.ops[v].label}) reads only constants"
        )
    counts, abort = libcoral_num_ops_per_segment(sizes, order, _first_sink(graph, order), num_stages)
    return counts, abort or libcoral_strategy_check(graph, order, counts)


def _corrected(
    graph: OpGraph, order: list[int], num_stages: int, sizes: list[int], counts: list[int] | None
) -> tuple[list[int], str | None] | None:
    """``counts`` (or, if None, the at-least-one-op loop) with the cuts moved into the pipeline bounds."""
    if counts is None:
        counts, _ = libcoral_num_ops_per_segment(sizes, order, _first_sink(graph, order), num_stages, at_least_one=True)
    cuts = [sum(counts[:k]) for k in range(1, num_stages)]
    lo, hi = pipeline_cut_bounds(graph, order)
    fixed = _clamp_cuts(cuts, lo, hi)
    if fixed is None:
        return None
    correction = None
    if fixed != cuts:
        moved = ", ".join(f"cut {k + 1} moved from {a} to {b}" for k, (a, b) in enumerate(zip(cuts, fixed)) if a != b)
        why = []
        if cuts[-1] > hi:
            v = order[hi]
            why.append(f"op {v} ({graph.ops[v].label}) is pinned to the last stage")
        if cuts[0] < lo:
            why.append("the first stage must hold the ops pinned first and read every model input")
        correction = f"{moved} ({'; '.join(why)})"
    return [b - a for a, b in zip([0] + fixed, fixed + [len(order)])], correction


def compiler_split(graph: OpGraph, num_stages: int) -> CompilerSplit:
    """libcoral's parameter-count split (see the module doc), corrected where needed."""
    n = graph.num_ops
    if not 1 <= num_stages <= n:
        raise StageMapError(f"cannot split {n} ops into {num_stages} segments", num_stages)
    order = libcoral_topological_order(graph)
    if num_stages == 1:  # edgetpu_compiler --num_segments=1 does not partition
        return CompilerSplit(tuple(order), (n,), (n,), None, None)
    sizes = libcoral_parameter_sizes(graph)
    _, abort = libcoral_split(graph, num_stages, order, sizes)
    counts, loop_abort = libcoral_num_ops_per_segment(sizes, order, _first_sink(graph, order), num_stages)
    libcoral = None if abort else tuple(counts)
    fixed = _corrected(graph, order, num_stages, sizes, None if loop_abort else counts)
    if fixed is not None:
        return CompilerSplit(tuple(order), tuple(fixed[0]), libcoral, abort, fixed[1])
    moved = _pinned_order(graph, order)
    fixed = _corrected(graph, moved, num_stages, sizes, None) if moved != order else None
    if fixed is None:
        raise StageMapError(
            f"cannot split {n} ops into {num_stages} contiguous segments of libcoral's "
            "execution order with the pinned ops in the first and last stage",
            num_stages,
        )
    note = (
        "libcoral's execution order has no valid split: the ops pinned last (and their descendants) were "
        "moved to its end and those pinned first (and their ancestors) to its front, then split with at "
        "least one op per segment"
    )
    return CompilerSplit(tuple(moved), tuple(fixed[0]), libcoral, abort, note + (f"; {fixed[1]}" if fixed[1] else ""))


def param_balanced_sizes(graph: OpGraph, num_stages: int) -> list[int]:
    """Number of ops per segment of the compiler split, along its order (libcoral's TopologicalSort)."""
    return list(compiler_split(graph, num_stages).num_ops)


def compiler_schedule(graph: OpGraph, num_stages: int, cost: object | None = None, **options: object) -> Plan:
    """libcoral's parameter-count split of its execution order (``cost`` and ``options`` are not used)."""
    t0 = time.perf_counter()
    split = compiler_split(graph, num_stages)
    stats: list[tuple[str, int | float | str]] = [
        ("libcoral_outcome", split.libcoral_abort or "ok"),
        ("libcoral_would_abort", split.libcoral_abort is not None),
    ]
    if split.correction:
        stats.append(("correction", split.correction))
    return Plan(split.stages(), num_stages, "compiler", solve_seconds=time.perf_counter() - t0, stats=PlanStats(stats))
