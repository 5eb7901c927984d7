"""Brute-force oracle for tests: every valid stage map of a small graph, and the best one.

:func:`all_monotone_maps` enumerates exactly the stage maps that
:func:`tflite_io.validate_stage_map` accepts (monotone along every edge, every
stage non-empty, every model-output producer in the last stage, every model
input read by stage 0). Ops are assigned in index order, which is topological,
each to a stage no lower than its predecessors' (model-output producers go
straight to the last stage), and the complete maps are then filtered by the
two global rules. :func:`best_map` scores every map with the pure objective
functions of :mod:`respect_pass.objectives`.

Only for small graphs (at most :data:`MAX_OPS` ops and :data:`MAX_STAGES`
stages): the number of maps grows like K**n.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

from hardware import EdgeTpuSpec
from tflite_io import OpGraph

from .objectives import DEFAULT_ALPHA, check_objective, latency_key, memory_objective
from .plan import REL_TOL, close

__all__ = ["MAX_OPS", "MAX_STAGES", "REL_TOL", "all_monotone_maps", "best_map", "is_contiguous_split", "key_better"]

#: Largest graph and number of stages the oracle accepts.
MAX_OPS = 10
MAX_STAGES = 3
#: Values within this relative distance compare as equal.


def _check_size(graph: OpGraph, num_stages: int) -> None:
    if graph.num_ops > MAX_OPS or not 1 <= num_stages <= MAX_STAGES:
        raise ValueError(
            f"oracle handles at most {MAX_OPS} ops and 1..{MAX_STAGES} stages, "
            f"got {graph.num_ops} ops and {num_stages} stages"
        )


def all_monotone_maps(graph: OpGraph, num_stages: int) -> Iterator[tuple[int, ...]]:
    """Every stage map of ``graph`` into ``num_stages`` stages that ``validate_stage_map`` accepts.

    Maps come in lexicographic order. Raises ValueError above the size limits.
    """
    _check_size(graph, num_stages)
    n, last = graph.num_ops, num_stages - 1
    preds = graph.preds
    pinned = graph.last_stage_ops
    inputs = tuple(graph.inputs)
    readers = [frozenset(graph.consumers.get(t, ())) for t in inputs] + [frozenset([v]) for v in graph.first_stage_ops]
    stages = [0] * n

    def complete() -> bool:
        if len(set(stages)) != num_stages:
            return False
        return all(any(stages[r] == 0 for r in rs) for rs in readers)

    def assign(v: int) -> Iterator[tuple[int, ...]]:
        if v == n:
            if complete():
                yield tuple(stages)
            return
        low = max((stages[u] for u in preds[v]), default=0)
        choices = (last,) if v in pinned else range(low, num_stages)
        # Stages still unused can only be filled by the ops left after v.
        for k in choices:
            stages[v] = k
            missing = num_stages - len(set(stages[: v + 1]))
            if missing <= n - v - 1:
                yield from assign(v + 1)

    if n == 0:
        return
    yield from assign(0)


def is_contiguous_split(stages: Sequence[int], order: Sequence[int]) -> bool:
    """True when the stage never decreases along ``order`` (the map is a contiguous split of it)."""
    return all(stages[a] <= stages[b] for a, b in zip(order, order[1:]))


def key_better(a: Sequence[float], b: Sequence[float]) -> bool:
    """Lexicographic ``a < b`` where components within :data:`REL_TOL` relative count as equal."""
    for x, y in zip(a, b):
        if close(x, y):
            continue
        return x < y
    return False


def best_map(
    graph: OpGraph,
    num_stages: int,
    spec: EdgeTpuSpec,
    objective: str = "latency",
    alpha: float = DEFAULT_ALPHA,
    contiguous_order: Sequence[int] | None = None,
) -> tuple[tuple[float, float] | float, tuple[int, ...]] | tuple[None, None]:
    """The best value and a map achieving it, by exhaustive enumeration.

    ``latency``: the value is ``latency_key`` (bottleneck ms, latency ms),
    compared lexicographically with :data:`REL_TOL`; ``memory``: the value is
    ``memory_objective``. With ``contiguous_order`` (a topological order of
    op indices), only contiguous splits of that order are considered.
    Returns ``(None, None)`` when no map is valid. Raises ValueError above the
    size limits.
    """
    check_objective(objective)
    order = list(contiguous_order) if contiguous_order is not None else None
    if order is not None and sorted(order) != list(range(graph.num_ops)):
        raise ValueError("contiguous_order must list every op index once")
    best_value: tuple[float, float] | float | None = None
    best: tuple[int, ...] | None = None
    for m in all_monotone_maps(graph, num_stages):
        if order is not None and not is_contiguous_split(m, order):
            continue
        if objective == "latency":
            value: tuple[float, float] | float = latency_key(graph, m, num_stages, spec)
            better = best_value is None or key_better(value, best_value)  # type: ignore[arg-type]
        else:
            value = memory_objective(graph, m, num_stages, alpha)
            better = best_value is None or key_better((value,), (best_value,))  # type: ignore[arg-type]
        if better:
            best_value, best = value, m
    if best is None or best_value is None:
        return None, None
    return best_value, best
