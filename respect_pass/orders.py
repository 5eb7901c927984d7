"""Topological orders of an OpGraph and the stage maps they induce.

Every monotone stage map is a contiguous split of some topological order, so
random orders cut at random places sample the whole space of valid pipeline
plans (used by tests, benchmarks and, later, order-based schedulers).
"""
from __future__ import annotations

import random
from collections.abc import Sequence

from tflite_io import OpGraph

__all__ = ["random_topological_order", "split_order", "random_stage_map"]


def random_topological_order(graph: OpGraph, rng: random.Random) -> list[int]:
    """A uniformly chosen ready op at each step; model-output producers only when nothing else is ready."""
    indeg = [len(p) for p in graph.preds]
    ready = [v for v in range(graph.num_ops) if indeg[v] == 0]
    order: list[int] = []
    while ready:
        normal = [v for v in ready if v not in graph.output_ops]
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

    The first cut falls after every op that reads a model input and the last
    before the first op producing a model output. None when the drawn order
    has no such K-split.
    """
    order = random_topological_order(graph, rng)
    pos = {v: i for i, v in enumerate(order)}
    inputs = set(graph.inputs)
    lo = max((pos[v] + 1 for v in range(graph.num_ops) if inputs & set(graph.ops[v].inputs)), default=1)
    hi = min((pos[v] for v in graph.output_ops), default=graph.num_ops - 1)
    candidates = range(max(lo, 1), hi + 1)
    if len(candidates) < num_stages - 1:
        return None
    return split_order(order, sorted(rng.sample(candidates, num_stages - 1)), graph.num_ops)
