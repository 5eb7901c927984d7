"""dp: the optimal contiguous split of an order; multiorder: the best of several orders."""

import itertools
import random

import pytest
from conftest import chain_graph
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from strategies import BRANCHY, examples, random_dags, relabel

from hardware import USB
from respect_pass.objectives import latency_key, memory_objective
from respect_pass.orders import random_topological_order, split_order
from respect_pass.schedulers import get_scheduler
from respect_pass.schedulers.dp import dp_schedule
from respect_pass.schedulers.multiorder import multiorder_schedule
from tflite_io import StageMapError, read, validate_stage_map


def brute_force(graph, order, k, value):
    """Best value over every valid contiguous split of ``order``."""
    best = None
    for cuts in itertools.combinations(range(1, graph.num_ops), k - 1):
        stages = split_order(order, cuts, graph.num_ops)
        try:
            validate_stage_map(graph, stages, k)
        except StageMapError:
            continue
        v = value(stages)
        best = v if best is None or v < best else best
    return best


def close(a, b):
    return all(x == pytest.approx(y, rel=1e-9, abs=1e-15) for x, y in zip(a, b))


@settings(max_examples=examples(120), deadline=None)
@given(random_dags(max_ops=10), st.integers(2, 4), st.randoms(use_true_random=False))
def test_dp_equals_brute_force_latency(graph, k, rng):
    """Optimal for the order: its segments costed with their ops in that sequence (the graph relabelled so);
    the figures it reports are those of the written segments (ops in execution order)."""
    order = random_topological_order(graph, rng)
    rel = relabel(graph, order)
    best = brute_force(rel, list(range(graph.num_ops)), k, lambda s: latency_key(rel, s, k, USB))
    assume(best is not None)
    plan = dp_schedule(graph, k, USB, order=order)
    validate_stage_map(graph, plan.stages, k)
    got = latency_key(rel, [plan.stages[v] for v in order], k, USB)
    assert close(got, best), (got, best)
    stats = dict(plan.stats)
    assert close((stats["bottleneck_ms"], stats["latency_ms"]), latency_key(graph, plan.stages, k, USB))


@settings(max_examples=examples(80), deadline=None)
@given(
    random_dags(max_ops=10), st.integers(2, 4), st.randoms(use_true_random=False), st.sampled_from([1 / 2**20, 1e-5, 1e-7])
)
def test_dp_equals_brute_force_memory(graph, k, rng, alpha):
    order = random_topological_order(graph, rng)
    best = brute_force(graph, order, k, lambda s: memory_objective(graph, s, k, alpha))
    assume(best is not None)
    plan = dp_schedule(graph, k, USB, objective="memory", alpha=alpha, order=order)
    validate_stage_map(graph, plan.stages, k)
    got = memory_objective(graph, plan.stages, k, alpha)
    assert got == pytest.approx(best, rel=1e-9) and plan.stats["objective_value"] == pytest.approx(got)


def test_dp_on_a_chain_by_hand():
    # 4 ops, 10 MAC each, params 3 MiB, 3 MiB, 3 MiB, 3 MiB: K=2 splits 2+2 (6 MiB each fits the cache)
    g = chain_graph([3 * 2**20] * 4)
    plan = dp_schedule(g, 2, USB)
    assert plan.stages == (0, 0, 1, 1) and plan.scheduler == "dp"


def test_infeasible_k_is_a_clear_error():
    g = chain_graph([10, 10, 10])
    with pytest.raises(StageMapError, match="no 4-stage contiguous split"):
        dp_schedule(g, 4, USB)
    with pytest.raises(Exception, match="unknown objective"):
        dp_schedule(g, 2, USB, objective="speed")


def test_multiorder_never_worse_than_dp_and_valid():
    g = read(BRANCHY)
    for k in (2, 3, 5):
        dp = dp_schedule(g, k, USB)
        mo = multiorder_schedule(g, k, USB, num_random=8)
        validate_stage_map(g, mo.stages, k)
        assert latency_key(g, mo.stages, k, USB) <= latency_key(g, dp.stages, k, USB)
        assert mo.scheduler == "multiorder" and mo.stats["orders"] == 12
    mem = multiorder_schedule(g, 3, USB, objective="memory", num_random=4)
    assert memory_objective(g, mem.stages, 3) <= memory_objective(g, dp_schedule(g, 3, USB, objective="memory").stages, 3)


def test_multiorder_time_budget_sets_the_number_of_random_orders():
    g = read(BRANCHY)
    none = multiorder_schedule(g, 3, USB, time_budget_s=0.0)
    assert none.stats["orders"] == 4  # the heuristic orders always run
    some = multiorder_schedule(g, 3, USB, time_budget_s=0.2)
    assert some.stats["orders"] > 4  # a budget buys random orders besides the heuristic ones
    validate_stage_map(g, some.stages, 3)
    assert latency_key(g, some.stages, 3, USB) <= latency_key(g, none.stages, 3, USB)
    with pytest.raises(ValueError, match="time_budget_s must be >= 0, got -1"):
        multiorder_schedule(g, 3, USB, time_budget_s=-1)


def test_registered_with_the_common_signature(embedded_path):
    g = read(embedded_path)
    for name in ("dp", "multiorder"):
        plan = get_scheduler(name)(g, 3, USB)
        validate_stage_map(g, plan.stages, 3)
        compiler = get_scheduler("compiler")(g, 3, USB)
        assert latency_key(g, plan.stages, 3, USB) <= latency_key(g, compiler.stages, 3, USB)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_dp_equals_brute_force_on_the_branchy_model(seed):
    g = read(BRANCHY)
    order = random_topological_order(g, random.Random(seed))
    for k in (2, 3):
        best = brute_force(g, order, k, lambda s, k=k: latency_key(g, s, k, USB))
        assert close(latency_key(g, dp_schedule(g, k, USB, order=order).stages, k, USB), best)


def test_dp_reuses_the_range_costs_a_caller_already_has():
    from hardware.kernel import cost_arrays, range_costs

    graph = read(BRANCHY)
    ca = cost_arrays(graph, USB)
    execution = list(range(graph.num_ops))
    for k in (2, 3, 4):
        fresh = dp_schedule(graph, k, USB, arrays=ca)
        given_ranges = dp_schedule(graph, k, USB, arrays=ca, ranges=range_costs(ca, execution))
        assert given_ranges.stages == fresh.stages and dict(given_ranges.stats) == dict(fresh.stats)
    other = random_topological_order(graph, random.Random(1))
    assert other != execution
    with pytest.raises(ValueError, match="another order"):
        dp_schedule(graph, 3, USB, arrays=ca, ranges=range_costs(ca, other))
