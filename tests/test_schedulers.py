"""Every registered scheduler: valid plans, costs the cost model reproduces, nothing beats a proven optimum."""

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from strategies import examples, placed_dags, random_dags

from hardware import USB
from respect_pass.generator import generate
from respect_pass.objectives import latency_key
from respect_pass.oracle import best_map
from respect_pass.schedulers import SCHEDULERS
from tflite_io import StageMapError, validate_stage_map

NAMES = ("compiler", "profiling", "dp", "multiorder", "exact", "respect")


def plans(graph, k):
    out = {}
    for name in NAMES:
        try:
            out[name] = SCHEDULERS[name](graph, k, USB)
        except StageMapError:
            out[name] = None
    return out


def check(graph, k, found):
    exact = found["exact"]
    assert exact is not None
    best = latency_key(graph, exact.stages, k, USB)
    if exact.optimal:
        assert exact.lower_bound_ms == pytest.approx(best[0], rel=1e-6)
    for name, plan in found.items():
        if plan is None:
            continue
        validate_stage_map(graph, plan.stages, k)
        assert plan.scheduler == name and plan.num_stages == k
        value = latency_key(graph, plan.stages, k, USB)
        stats = dict(plan.stats)
        if "bottleneck_ms" in stats:  # the scheduler's own figure is the cost model's
            assert stats["bottleneck_ms"] == pytest.approx(value[0], rel=1e-9)
        if exact.optimal:
            assert value[0] >= best[0] * (1 - 1e-9), name


def check_against_the_oracle(graph, k):
    try:
        value, _ = best_map(graph, k, USB)
    except ValueError:
        value = None
    assume(value is not None)
    found = plans(graph, k)
    check(graph, k, found)
    exact = found["exact"]
    got = latency_key(graph, exact.stages, k, USB)[0]
    assert exact.lower_bound_ms <= value[0] * (1 + 1e-6) and got >= value[0] * (1 - 1e-9)
    if exact.optimal:  # proven for the device model, not only for its relaxation
        assert got == pytest.approx(value[0], rel=1e-9)


@settings(max_examples=examples(40), deadline=None)
@given(random_dags(max_ops=9), st.integers(2, 3))
def test_all_schedulers_on_small_dags_against_the_oracle(graph, k):
    check_against_the_oracle(graph, k)


@settings(max_examples=examples(25), deadline=None)
@given(placed_dags(max_ops=9), st.integers(2, 3))
def test_all_schedulers_with_host_ops_against_the_oracle(graph, k):
    """CPU ops pinned to the end stages: every scheduler respects the pins, nothing beats the optimum."""
    check_against_the_oracle(graph, k)


@pytest.mark.parametrize("family", ["nas_cell", "layered", "inception"])
def test_all_schedulers_on_generated_graphs(family):
    g = generate(family, 40, seed=3)
    for k in (2, 4):
        check(g, k, plans(g, k))
