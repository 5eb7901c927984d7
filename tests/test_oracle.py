"""The brute-force oracle: it enumerates exactly the stage maps validate_stage_map accepts."""

import itertools

import pytest
from conftest import chain_graph, diamond_graph
from hypothesis import given, settings
from hypothesis import strategies as st
from strategies import examples, random_dags

from hardware import USB
from respect_pass.objectives import latency_key, memory_objective
from respect_pass.oracle import all_monotone_maps, best_map, is_contiguous_split, key_better
from respect_pass.orders import libcoral_topological_order
from tflite_io import Op, OpGraph, StageMapError, TensorInfo, validate_stage_map


def brute_force(graph, k):
    """Every assignment of K stages to the ops that validate_stage_map accepts."""
    out = []
    for m in itertools.product(range(k), repeat=graph.num_ops):
        try:
            validate_stage_map(graph, m, k)
        except StageMapError:
            continue
        out.append(m)
    return out


def two_input_graph():
    """Two model inputs: x read by op0 only, z read by op0 and op2; op1 reads op0, op2 reads op1."""
    T = [TensorInfo(i, n, "int8", (8,), 8) for i, n in enumerate(["x", "z", "a", "b", "c"])]
    ops = (Op(0, "ADD", (0, 1), (2,), 0, 1), Op(1, "ADD", (2,), (3,), 0, 1), Op(2, "ADD", (3, 1), (4,), 0, 1))
    return OpGraph("two_inputs", ops, tuple(T), (0, 1), (4,))


def early_output_graph():
    """A chain whose first op also produces a model output (so every op is pinned to the last stage)."""
    g = chain_graph([10, 20, 30])
    return OpGraph("early_output", g.ops, g.tensors, g.inputs, (1, 3))


@pytest.mark.parametrize("make", [diamond_graph, lambda: chain_graph([5, 6, 7, 8]), two_input_graph, early_output_graph])
@pytest.mark.parametrize("k", [1, 2, 3])
def test_enumerates_exactly_the_valid_maps(make, k):
    g = make()
    maps = list(all_monotone_maps(g, k))
    assert maps == sorted(set(maps))
    assert maps == brute_force(g, k)


@settings(max_examples=examples(40), deadline=None)
@given(random_dags(max_ops=7), st.integers(1, 3))
def test_random_dags_match_brute_force(g, k):
    assert list(all_monotone_maps(g, k)) == brute_force(g, k)


def test_diamond_maps_by_hand():
    assert list(all_monotone_maps(diamond_graph(), 2)) == [(0, 0, 0, 1), (0, 0, 1, 1), (0, 1, 0, 1), (0, 1, 1, 1)]


def test_size_limits():
    with pytest.raises(ValueError):
        list(all_monotone_maps(chain_graph([1] * 11), 2))
    with pytest.raises(ValueError):
        list(all_monotone_maps(diamond_graph(), 4))
    with pytest.raises(ValueError):
        best_map(chain_graph([1] * 11), 2, USB)


def test_no_valid_map():
    assert best_map(early_output_graph(), 2, USB) == (None, None)
    assert best_map(chain_graph([1, 2]), 3, USB) == (None, None)


@settings(max_examples=examples(30), deadline=None)
@given(random_dags(max_ops=8), st.integers(2, 3))
def test_best_map_is_the_minimum(g, k):
    maps = list(all_monotone_maps(g, k))
    value, best = best_map(g, k, USB)
    if not maps:
        assert best is None
        return
    assert best in maps and latency_key(g, best, k, USB) == value
    assert not any(key_better(latency_key(g, m, k, USB), value) for m in maps)
    mem, mbest = best_map(g, k, USB, objective="memory", alpha=1e-6)
    assert mem == pytest.approx(min(memory_objective(g, m, k, 1e-6) for m in maps), rel=1e-12)
    assert memory_objective(g, mbest, k, 1e-6) == mem


@settings(max_examples=examples(30), deadline=None)
@given(random_dags(max_ops=8), st.integers(2, 3))
def test_contiguous_order_restricts_to_splits(g, k):
    order = libcoral_topological_order(g)
    value, best = best_map(g, k, USB, contiguous_order=order)
    free, _ = best_map(g, k, USB)
    if best is None:
        return
    assert is_contiguous_split(best, order)
    assert not key_better(value, free)  # the restricted optimum is never better


def test_contiguous_order_must_be_a_permutation():
    with pytest.raises(ValueError):
        best_map(diamond_graph(), 2, USB, contiguous_order=[0, 1, 2])


def test_key_better_tolerance():
    assert key_better((1.0, 5.0), (2.0, 1.0))
    assert key_better((1.0, 1.0), (1.0 + 1e-12, 2.0))  # bottlenecks tie: latency decides
    assert not key_better((1.0, 2.0), (1.0 + 1e-12, 1.0))
    assert not key_better((1.0, 1.0), (1.0, 1.0))
