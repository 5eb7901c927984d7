"""Hypothesis strategies shared by the property tests."""
from __future__ import annotations

import random
from pathlib import Path

from hypothesis import strategies as st

from tflite_io import OpGraph

BRANCHY = Path(__file__).resolve().parent / "data" / "tiny_inception_int8.tflite"


def random_topological_order(graph: OpGraph, rng: random.Random) -> list[int]:
    """A uniformly chosen ready op at each step; ops producing model outputs only when nothing else is ready."""
    indeg = [len(p) for p in graph.preds]
    ready = [v for v in range(graph.num_ops) if indeg[v] == 0]
    order = []
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


def random_monotone_map(graph: OpGraph, num_stages: int, rng: random.Random) -> tuple[int, ...] | None:
    """A random valid stage map: a random topological order cut at K-1 random places.

    Every monotone map is a contiguous split of some topological order, so on a
    branchy graph this reaches non-contiguous maps of the execution order. The
    first cut comes after every op that reads a model input, the last before
    the first op producing a model output. None when no K-split exists.
    """
    order = random_topological_order(graph, rng)
    inputs = set(graph.inputs)
    pos = {v: i for i, v in enumerate(order)}
    lo = max((pos[v] + 1 for v in range(graph.num_ops) if inputs & set(graph.ops[v].inputs)), default=1)
    hi = min(pos[v] for v in graph.output_ops) if graph.output_ops else graph.num_ops - 1
    candidates = range(max(lo, 1), hi + 1)
    if len(candidates) < num_stages - 1:
        return None
    cuts = sorted(rng.sample(candidates, num_stages - 1))
    s = [0] * graph.num_ops
    for i, v in enumerate(order):
        s[v] = sum(1 for c in cuts if i >= c)
    return tuple(s)


@st.composite
def monotone_maps(draw, graph: OpGraph, min_stages: int = 2, max_stages: int = 6):
    """(K, stage map) pairs for ``graph``."""
    k = draw(st.integers(min_stages, max_stages))
    rng = random.Random(draw(st.integers(0, 2**32 - 1)))
    m = random_monotone_map(graph, k, rng)
    assert m is not None, f"no {k}-split of {graph.name}"
    return k, m
