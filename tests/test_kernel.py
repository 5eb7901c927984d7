"""The device model's kernel (hardware.kernel) equals the reference (hardware.cost) on every split and map."""
import itertools
import random

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from hardware import PCIE, USB, stage_costs
from respect_pass.orders import random_stage_map, random_topological_order, split_order
from hardware.kernel import cost_arrays, lower_bound_s, map_stage_times, range_costs
from strategies import BRANCHY, placed_dags, random_dags
from tflite_io import StageMapError, read, validate_stage_map


def split_values(rc, cuts):
    b = [0, *cuts, len(rc.order)]
    return [rc.time[b[i], b[i + 1]] for i in range(len(b) - 2)] + [rc.time_last[b[-2]]]


def check_all_splits(graph, order, spec, k):
    rc = range_costs(cost_arrays(graph, spec), order)
    for cuts in itertools.combinations(range(1, graph.num_ops), k - 1):
        stages = split_order(order, cuts, graph.num_ops)
        values = split_values(rc, cuts)
        try:
            validate_stage_map(graph, stages, k)
        except StageMapError:
            assert not all(np.isfinite(values)), cuts
            continue
        assert np.allclose(values, [c.total_s for c in stage_costs(graph, stages, k, spec)], rtol=1e-12), cuts


@settings(max_examples=80, deadline=None)
@given(random_dags(max_ops=10), st.integers(2, 3), st.integers(0, 2**16))
def test_every_split_of_random_dags(graph, k, seed):
    order = random_topological_order(graph, random.Random(seed))
    check_all_splits(graph, order, USB, k)


@settings(max_examples=60, deadline=None)
@given(placed_dags(max_ops=10), st.integers(2, 3), st.integers(0, 2**16))
def test_every_split_with_host_ops(graph, k, seed):
    """Host ops (their time, hand-off bytes, and the first/last stage they are pinned to) in the matrices too."""
    order = random_topological_order(graph, random.Random(seed))
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
    assert rc.params[0, g.num_ops] == g.total_param_bytes
    assert rc.params[3, 9] == g.param_bytes_of(range(3, 9))


def test_order_must_be_a_permutation():
    g = read(BRANCHY)
    try:
        range_costs(cost_arrays(g, USB), [0, 0, 1])
    except StageMapError as exc:
        assert "each of the" in str(exc)
    else:
        raise AssertionError("accepted a bad order")


@settings(max_examples=80, deadline=None)
@given(placed_dags(max_ops=12), st.integers(1, 4), st.integers(0, 2**16))
def test_map_stage_times_equal_the_reference(graph, k, seed):
    """Any monotone map (not only contiguous splits), host ops included; the lower bound is below it."""
    stages = random_stage_map(graph, k, random.Random(seed))
    if stages is None:
        return
    ca = cost_arrays(graph, USB)
    want = [c.total_s for c in stage_costs(graph, stages, k, USB)]
    assert np.allclose(map_stage_times(ca, np.asarray(stages), k), want, rtol=1e-12)
    assert lower_bound_s(ca, k) <= max(want) * (1 + 1e-12)
