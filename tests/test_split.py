"""respect's candidate splitting (respect_pass.schedulers.split): range costs on the rows near a bound give
the whole matrices' split, bit for bit."""

import random
from unittest import mock

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from strategies import examples, placed_dags

from hardware import USB
from hardware.kernel import cost_arrays, range_costs
from respect_pass.generator import generate
from respect_pass.orders import random_topological_order
from respect_pass.schedulers import split
from respect_pass.schedulers.split import bottleneck_value, bounded_range_costs, cuts_under


def same_split(ca, order, k, bound, hint=()):
    """The bounded costs' bottleneck, cuts and latency equal the whole matrices'; whether rows were skipped."""
    whole = range_costs(ca, order)
    part = bounded_range_costs(ca, np.asarray(order), k, bound, hint)
    b = bottleneck_value(whole, k)
    assert bottleneck_value(part, k) == b
    if np.isfinite(b):
        assert cuts_under(part, k, b) == cuts_under(whole, k, b)
    return part.rows is not None


@settings(max_examples=examples(100), deadline=None)
@given(
    placed_dags(max_ops=14),
    st.integers(2, 5),
    st.randoms(use_true_random=False),
    st.sampled_from([0.5, 0.97, 1.0, 1.01, 1.3, 3.0]),
    st.booleans(),
    st.booleans(),
)
def test_bounded_costs_split_as_the_whole_matrices(graph, k, rng, factor, small_cache, with_hint):
    """Any bound (below the order's bottleneck too), with or without a hint, on graphs of any size."""
    ca = cost_arrays(graph, USB.with_(cache_bytes=2_000) if small_cache else USB)
    order = random_topological_order(graph, rng)
    b = bottleneck_value(range_costs(ca, order), k)
    if not np.isfinite(b) or graph.num_ops < 2:
        return
    hint = sorted(rng.sample(range(1, graph.num_ops), min(k - 1, graph.num_ops - 1))) if with_hint else []
    with (
        mock.patch.object(split, "BOUNDED_MIN_OPS", 0),
        mock.patch.object(split, "MAX_ROW_SHARE", 1.0),
        mock.patch.object(split, "MAX_OPEN_SHARE", 1.0),
    ):
        same_split(ca, order, k, b * factor, hint)


@pytest.mark.parametrize("family", ["residual", "inception"])
def test_a_large_graph_is_split_from_a_few_rows(family):
    """A 300-op graph, orders near each other, bounds below, at and above the first order's bottleneck, with
    and without that order's cuts as the hint: the bounded costs skip rows and split the same way."""
    g = generate(family, 300, seed=1)
    ca = cost_arrays(g, USB)
    rng = random.Random(0)
    orders = [list(range(g.num_ops))] + [random_topological_order(g, rng) for _ in range(3)]
    partial = 0
    for k in (2, 3, 4, 5):
        first = range_costs(ca, orders[0])
        b0 = bottleneck_value(first, k)
        for factor in (0.95, 1.0, 1.03):
            for hint in ([], cuts_under(first, k, b0)[0]):
                for order in orders:
                    partial += same_split(ca, order, k, b0 * factor, hint)
    assert partial >= 30


def test_more_stages_or_a_small_graph_take_the_whole_matrices():
    g = generate("residual", 300, seed=1)
    ca = cost_arrays(g, USB)
    order = np.arange(g.num_ops)
    b = bottleneck_value(range_costs(ca, order), 6)
    assert bounded_range_costs(ca, order, 6, b).rows is None
    small = generate("residual", 60, seed=1)
    ca = cost_arrays(small, USB)
    order = np.arange(small.num_ops)
    assert bounded_range_costs(ca, order, 3, bottleneck_value(range_costs(ca, order), 3)).rows is None
