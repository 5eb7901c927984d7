"""Hypothesis strategies shared by the property tests."""
from __future__ import annotations

import random
from pathlib import Path

from hypothesis import strategies as st

from respect_pass.orders import random_stage_map
from tflite_io import OpGraph

BRANCHY = Path(__file__).resolve().parent / "data" / "tiny_inception_int8.tflite"


@st.composite
def monotone_maps(draw, graph: OpGraph, min_stages: int = 2, max_stages: int = 6):
    """(K, stage map) pairs for ``graph``: any valid map, usually not contiguous on branchy graphs."""
    k = draw(st.integers(min_stages, max_stages))
    rng = random.Random(draw(st.integers(0, 2**32 - 1)))
    m = random_stage_map(graph, k, rng)
    assert m is not None, f"no {k}-split of {graph.name}"
    return k, m
