"""The device model's kernel (hardware.kernel) equals the reference (hardware.cost) on every split and map.

A range of an order is costed as a segment whose ops run in that order (the caching rule walks layers in
that sequence), so the reference is evaluated on the graph relabelled in the order (:func:`relabel`); for
the execution order that is the graph itself.
"""

import itertools
import random

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from strategies import BRANCHY, examples, placed_dags, random_dags, relabel

from hardware import PCIE, USB, stage_costs
from hardware.cost import device_param_bytes, stream_tiles
from hardware.kernel import (
    cost_arrays,
    cover_lower_bounds,
    lower_bound_s,
    map_stage_times,
    map_stage_times_many,
    order_terms,
    range_costs,
    range_rows,
)
from respect_pass.generator import generate
from respect_pass.orders import random_stage_map, random_topological_order, split_order
from tflite_io import StageMapError, contiguous_stage_map, read, validate_stage_map


def split_values(rc, cuts):
    b = [0, *cuts, len(rc.order)]
    return [rc.time[b[i], b[i + 1]] for i in range(len(b) - 2)] + [rc.time_last[b[-2]]]


def check_all_splits(graph, order, spec, k):
    rc = range_costs(cost_arrays(graph, spec), order)
    ref = relabel(graph, order)
    for cuts in itertools.combinations(range(1, graph.num_ops), k - 1):
        stages = split_order(order, cuts, graph.num_ops)
        values = split_values(rc, cuts)
        try:
            validate_stage_map(graph, stages, k)
        except StageMapError:  # the matrices mark unrunnable ranges; the DP keeps stage 0 up to min_first_end
            assert not all(np.isfinite(values)) or (cuts and cuts[0] < rc.min_first_end), cuts
            continue
        sizes = [b - a for a, b in zip((0, *cuts), (*cuts, graph.num_ops))]
        want = [c.total_s for c in stage_costs(ref, contiguous_stage_map(sizes), k, spec)]
        assert np.allclose(values, want, rtol=1e-12), cuts
        if list(order) == sorted(order):
            assert np.allclose(values, [c.total_s for c in stage_costs(graph, stages, k, spec)], rtol=1e-12), cuts


@settings(max_examples=examples(80), deadline=None)
@given(random_dags(max_ops=10), st.integers(2, 3), st.randoms(use_true_random=False))
def test_every_split_of_random_dags(graph, k, rng):
    order = random_topological_order(graph, rng)
    check_all_splits(graph, order, USB, k)


@settings(max_examples=examples(40), deadline=None)
@given(random_dags(max_ops=10), st.integers(2, 3))
def test_every_split_of_the_execution_order(graph, k):
    check_all_splits(graph, list(range(graph.num_ops)), USB, k)


@settings(max_examples=examples(60), deadline=None)
@given(placed_dags(max_ops=10), st.integers(2, 3), st.randoms(use_true_random=False))
def test_every_split_with_host_ops(graph, k, rng):
    """Host ops (their time, hand-off bytes, and the first/last stage they are pinned to) in the matrices too."""
    order = random_topological_order(graph, rng)
    check_all_splits(graph, order, USB, k)


def test_branchy_model_random_orders_both_specs():
    g = read(BRANCHY)
    rng = random.Random(1)
    for spec in (USB, PCIE):
        for _ in range(3):
            check_all_splits(g, random_topological_order(g, rng), spec, 2)


def test_crossings_and_params():
    g = read(BRANCHY)
    order = list(range(g.num_ops))
    rc = range_costs(cost_arrays(g, USB), order)
    for b in range(1, g.num_ops):
        expected = sum(1 for t, src in g.producer.items() if g.consumers.get(t) and src < b <= max(g.consumers[t]))
        assert rc.crossings[b] == expected

    def device_bytes(ops):
        return sum({b: n for v in ops for b, n in device_param_bytes(g, g.ops[v]).items() if n}.values())

    assert rc.params[0, g.num_ops] == device_bytes(range(g.num_ops)) > g.total_param_bytes  # padded to 64 channels
    assert rc.params[3, 9] == device_bytes(range(3, 9))


def test_order_must_be_a_permutation():
    g = read(BRANCHY)
    try:
        range_costs(cost_arrays(g, USB), [0, 0, 1])
    except StageMapError as exc:
        assert "each of the" in str(exc)
    else:
        raise AssertionError("accepted a bad order")


@settings(max_examples=examples(80), deadline=None)
@given(placed_dags(max_ops=12), st.integers(1, 4), st.randoms(use_true_random=False))
def test_map_stage_times_equal_the_reference(graph, k, rng):
    """Any monotone map (not only contiguous splits), host ops included; the lower bound is below it."""
    stages = random_stage_map(graph, k, rng)
    if stages is None:
        return
    ca = cost_arrays(graph, USB)
    want = [c.total_s for c in stage_costs(graph, stages, k, USB)]
    assert np.allclose(map_stage_times(ca, np.asarray(stages), k), want, rtol=1e-12)
    assert lower_bound_s(ca, k) <= max(want) * (1 + 1e-12)


@settings(max_examples=examples(60), deadline=None)
@given(placed_dags(max_ops=12), st.integers(1, 4), st.randoms(use_true_random=False), st.booleans())
def test_many_maps_at_once_equal_one_at_a_time(graph, k, rng, small_cache):
    """map_stage_times_many: each row bit-identical to map_stage_times of that map (with a cache small enough
    that stages stream, too)."""
    maps = [m for m in (random_stage_map(graph, k, rng) for _ in range(5)) if m is not None]
    if not maps:
        return
    ca = cost_arrays(graph, USB.with_(cache_bytes=2_000) if small_cache else USB)
    many = map_stage_times_many(ca, np.asarray(maps), k)
    assert many.shape == (len(maps), k)
    for row, stages in zip(many, maps):
        assert np.array_equal(row, map_stage_times(ca, np.asarray(stages), k))


def test_many_maps_with_real_shapes_stream():
    g = generate("inception", 60, seed=3)
    ca = cost_arrays(g, USB.with_(cache_bytes=300_000))
    rng = random.Random(2)
    maps = np.asarray([random_stage_map(g, 4, rng) for _ in range(20)])
    many = map_stage_times_many(ca, maps, 4)
    singles = np.asarray([map_stage_times(ca, m, 4) for m in maps])
    assert np.array_equal(many, singles)
    ref = [[c.total_s for c in stage_costs(g, tuple(m), 4, ca.spec)] for m in maps]
    assert np.allclose(many, ref, rtol=1e-12)
    assert any(c.off_chip_bytes > 0 for m in maps for c in stage_costs(g, tuple(m), 4, ca.spec))


@pytest.mark.parametrize("family", ["residual", "inception", "dense"])
def test_streaming_with_real_shapes(family):
    """Generated graphs have real 4-D conv shapes (padding to 64 channels, spatial tiles); a small cache
    makes most stages stream, so the caching rule and the tile factors are exercised on every split, of
    the execution order and of random topological orders (whose ranges cache layers in another sequence)."""
    g = generate(family, 40, seed=5)
    spec = USB.with_(cache_bytes=300_000)
    ca = cost_arrays(g, spec)
    assert any(stream_tiles(g, op, spec) > 1 for op in g.ops)
    assert np.array_equal(ca.pb_bytes, np.floor(ca.pb_bytes))  # whole bytes: the range kernel relies on it
    rng = random.Random(0)
    streamed = 0
    for order in [list(range(g.num_ops))] + [random_topological_order(g, rng) for _ in range(3)]:
        rc, ref = range_costs(ca, order), relabel(g, order)  # ref: the graph re-numbered in this order
        for _ in range(30):
            k = rng.randint(1, 4)
            cuts = sorted(rng.sample(range(1, rc.max_end + 1), k - 1)) if k > 1 else []
            try:
                validate_stage_map(g, split_order(order, cuts, g.num_ops), k)
            except StageMapError:
                continue
            sizes = [b - a for a, b in zip((0, *cuts), (*cuts, g.num_ops))]
            costs = stage_costs(ref, contiguous_stage_map(sizes), k, spec)
            streamed += sum(c.off_chip_bytes > 0 for c in costs)
            assert np.allclose(split_values(rc, cuts), [c.total_s for c in costs], rtol=1e-12)
    assert streamed > 20


@settings(max_examples=examples(60), deadline=None)
@given(placed_dags(max_ops=12), st.randoms(use_true_random=False), st.booleans())
def test_rows_are_bit_identical_to_those_of_the_whole_matrices(graph, rng, small_cache):
    """range_rows sums each row on its own; every term is a whole number of bytes (or tile-bytes), so the rows
    equal the whole matrices' bit for bit, streaming included."""
    ca = cost_arrays(graph, USB.with_(cache_bytes=2_000) if small_cache else USB)
    order = random_topological_order(graph, rng)
    whole = range_costs(ca, order)
    rows = np.asarray(sorted(rng.sample(range(graph.num_ops + 1), rng.randint(1, graph.num_ops + 1))))
    part = range_rows(ca, order_terms(ca, order), rows)
    assert np.array_equal(part.time, whole.time[rows])
    assert np.array_equal(part.time_last, whole.time_last[rows])


def test_rows_with_real_shapes_stream():
    g = generate("inception", 80, seed=4)
    ca = cost_arrays(g, USB.with_(cache_bytes=300_000))
    order = random_topological_order(g, random.Random(3))
    whole = range_costs(ca, order)
    rows = np.arange(0, g.num_ops + 1, 3)
    part = range_rows(ca, order_terms(ca, order), rows)
    assert np.array_equal(part.time, whole.time[rows]) and np.array_equal(part.time_last, whole.time_last[rows])
    streamed = whole.params[rows][:, :] > 300_000
    assert streamed.sum() > 100  # the rows stream


@settings(max_examples=examples(60), deadline=None)
@given(placed_dags(max_ops=9), st.randoms(use_true_random=False), st.booleans())
def test_cover_bounds_are_below_every_split_of_a_head_or_tail(graph, rng, small_cache):
    """head[m, c] <= the total time of any m stages splitting order[:c]; tail[m, a] <= that of any m stages
    splitting order[a:] (the last of them the last stage)."""
    ca = cost_arrays(graph, USB.with_(cache_bytes=2_000) if small_cache else USB)
    order = random_topological_order(graph, rng)
    rc, n = range_costs(ca, order), graph.num_ops
    head, tail = cover_lower_bounds(ca, order_terms(ca, order), 3)
    for m in (1, 2, 3):
        for a in range(n):
            for inner in itertools.combinations(range(a + 1, n), m - 1):
                b = [a, *inner]
                total = sum(rc.time[b[i], b[i + 1]] for i in range(m - 1)) + rc.time_last[b[-1]]
                assert tail[m, a] <= total * (1 + 1e-12)
        for c in range(1, n + 1):
            for inner in itertools.combinations(range(1, c), m - 1):
                b = [0, *inner, c]
                assert head[m, c] <= sum(rc.time[b[i], b[i + 1]] for i in range(m)) * (1 + 1e-12)
