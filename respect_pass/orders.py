"""Topological orders of an OpGraph and the stage maps they induce.

Every monotone stage map is a contiguous split of some topological order, so
random orders cut at random places sample the whole space of valid pipeline
plans (used by tests, benchmarks and, later, order-based schedulers).
"""

from __future__ import annotations

import random
from collections.abc import Sequence

from tflite_io import OpGraph

__all__ = [
    "random_topological_order",
    "split_order",
    "random_stage_map",
    "libcoral_topological_order",
    "depths",
    "depth_order",
    "depth_first_order",
    "has_unique_order",
]


def has_unique_order(graph: OpGraph) -> bool:
    """Whether the execution order is the graph's only topological order (each op feeds the next one).

    Then every monotone stage map is a contiguous split of that order, so the ``dp`` split is optimal
    (VGG, MobileNet v1/v2 and DenseNet as converted by TFLite are such graphs).
    """
    succs = graph.succs
    return all(i + 1 in succs[i] for i in range(graph.num_ops - 1))


def random_topological_order(graph: OpGraph, rng: random.Random) -> list[int]:
    """A uniformly chosen ready op at each step; model-output producers only when nothing else is ready."""
    indeg = [len(p) for p in graph.preds]
    ready = [v for v in range(graph.num_ops) if indeg[v] == 0]
    order: list[int] = []
    while ready:
        normal = [v for v in ready if v not in graph.last_stage_ops]
        v = rng.choice(normal or ready)
        ready.remove(v)
        order.append(v)
        for w in graph.succs[v]:
            indeg[w] -= 1
            if indeg[w] == 0:
                ready.append(w)
    return order


def split_order(order: Sequence[int], cuts: Sequence[int], num_ops: int) -> tuple[int, ...]:
    """Stage map that puts ``order[cuts[k-1]:cuts[k]]`` in stage k (cuts sorted, exclusive of 0 and n)."""
    s = [0] * num_ops
    k = 0
    for i, v in enumerate(order):
        while k < len(cuts) and i >= cuts[k]:
            k += 1
        s[v] = k
    return tuple(s)


def random_stage_map(graph: OpGraph, num_stages: int, rng: random.Random) -> tuple[int, ...] | None:
    """A random valid K-stage map: a random topological order cut at K-1 random places.

    The first cut falls after every op that reads a model input or is pinned to the
    first stage, and the last before the first op pinned to the last stage. None when the drawn order
    has no such K-split.
    """
    order = random_topological_order(graph, rng)
    pos = {v: i for i, v in enumerate(order)}
    inputs = set(graph.inputs)
    lo = max(
        (pos[v] + 1 for v in range(graph.num_ops) if inputs & set(graph.ops[v].inputs) or v in graph.first_stage_ops),
        default=1,
    )
    hi = min((pos[v] for v in graph.last_stage_ops), default=graph.num_ops - 1)
    candidates = range(max(lo, 1), hi + 1)
    if len(candidates) < num_stages - 1:
        return None
    return split_order(order, sorted(rng.sample(candidates, num_stages - 1)), graph.num_ops)


def libcoral_topological_order(graph: OpGraph) -> list[int]:
    """libcoral's partitioner ``TopologicalSort``: Kahn's algorithm over a LIFO stack.

    Ready ops are pushed on top of the stack, except ops without successors
    (sinks), which go to the bottom so they run as late as possible. Source ops
    start on the stack in index order. libcoral takes children in hash-set
    order; here they come in op-index order, so ties are broken reproducibly.
    """
    indeg = [len(p) for p in graph.preds]
    stack = [v for v in range(graph.num_ops) if indeg[v] == 0]
    order: list[int] = []
    while stack:
        v = stack.pop()
        order.append(v)
        for w in graph.succs[v]:
            indeg[w] -= 1
            if indeg[w] == 0:
                if graph.succs[w]:
                    stack.append(w)
                else:
                    stack.insert(0, w)
    return order


def _ready_order(graph: OpGraph, key) -> list[int]:
    """Kahn's algorithm taking the ready op with the smallest ``key(op)``; model-output ops last."""
    import heapq

    indeg = [len(p) for p in graph.preds]
    heap = [(v in graph.last_stage_ops, key(v), v) for v in range(graph.num_ops) if indeg[v] == 0]
    heapq.heapify(heap)
    order: list[int] = []
    while heap:
        *_, v = heapq.heappop(heap)
        order.append(v)
        for w in graph.succs[v]:
            indeg[w] -= 1
            if indeg[w] == 0:
                heapq.heappush(heap, (w in graph.last_stage_ops, key(w), w))
    return order


def depths(graph: OpGraph) -> list[int]:
    """Longest path (in ops) from a source to each op."""
    d = [0] * graph.num_ops
    for v in range(graph.num_ops):
        for u in graph.preds[v]:
            d[v] = max(d[v], d[u] + 1)
    return d


def depth_order(graph: OpGraph) -> list[int]:
    """Breadth-first by depth (ASAP levels): all ops of level 0, then level 1, ..."""
    d = depths(graph)
    return _ready_order(graph, lambda v: d[v])


def depth_first_order(graph: OpGraph) -> list[int]:
    """Depth-first: always continue from the most recently readied op (finishes one branch before the next)."""
    indeg = [len(p) for p in graph.preds]
    stack = [v for v in range(graph.num_ops) if indeg[v] == 0][::-1]
    order: list[int] = []
    while stack:
        normal = [i for i, v in enumerate(stack) if v not in graph.last_stage_ops]
        v = stack.pop(normal[-1] if normal else len(stack) - 1)
        order.append(v)
        for w in reversed(graph.succs[v]):
            indeg[w] -= 1
            if indeg[w] == 0:
                stack.append(w)
    return order
