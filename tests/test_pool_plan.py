"""The pool planner (respect_pass/pool.py) on small synthetic graphs, placed as edgetpu_compiler would
(hardware.placement.placed): sharing never loses to TPUs of their own, every model is served, the groups
partition the TPUs, rates are met with the fewest TPUs, bad inputs are refused, and every plan is a valid
pipeline of its model."""

from __future__ import annotations

import math

import pytest
from conftest import chain_graph
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from strategies import examples, random_dags

from hardware import USB, USB_SEPARATE
from hardware.placement import placed
from hardware.pool import FREE, ROUND_ROBIN, cocompiled_costs, pool_rates
from respect_pass.pool import COCOMPILED, OWN, SEPARATE, PoolEntry, PoolPlan, plan_pool
from tflite_io import OpGraph, RespectPassError, validate_stage_map

#: random DAGs as load_model leaves them: placed, with at least one Edge TPU op
placed_graphs = random_dags(3, 8).map(placed).filter(lambda g: bool(g.tpu_ops))
SPECS = st.sampled_from([USB, USB_SEPARATE])
WEIGHTS = st.sampled_from([0.5, 1.0, 2.0, 3.0])
PROPERTY = settings(max_examples=examples(50), deadline=None, suppress_health_check=[HealthCheck.too_slow])


def chain(params: list[int], name: str) -> OpGraph:
    graph = placed(chain_graph(params, name=name))
    assert graph.tpu_ops and not graph.host_ops  # every CONV_2D of a chain maps to the Edge TPU
    return graph


A = chain([3_000_000, 3_000_000, 3_000_000], "a")  # 9e6 bytes: streams on one TPU, fits on two
B = chain([2_000_000] * 4, "b")
C = chain([1_000_000] * 3, "c")


def entries(graphs, weights=None) -> list[PoolEntry]:
    weights = weights or [1.0] * len(graphs)
    return [PoolEntry(f"m{i}", g, w) for i, (g, w) in enumerate(zip(graphs, weights))]


def check_plan(plan: PoolPlan, graphs, spec) -> None:
    """What holds of every pool plan: groups partition the models and the first ``plan.tpus`` TPUs, each
    model's plan and device-model stages lie in its group's TPUs, every plan is a valid monotone pipeline of its
    graph, the rates are pool_rates' of the models and every model runs at weight / unit_s."""
    n = len(graphs)
    assert sorted(m for g in plan.groups for m in g.models) == list(range(n))
    used = [d for g in plan.groups for d in g.tpus]
    assert sorted(used) == list(range(plan.tpus)) and len(set(used)) == len(used)
    assert plan.tpus <= plan.available
    assert len(plan.plans) == len(plan.models) == len(plan.costs) == n
    for gi, group in enumerate(plan.groups):
        assert group.mode == OWN if len(group.models) == 1 else group.mode in (COCOMPILED, SEPARATE)
        for m in group.models:
            p, model, graph = plan.plans[m], plan.models[m], graphs[m]
            assert model.name == plan.entries[m].name
            # the interleave's weight: the entry's, or less for a rate out of reach (the others' rates met)
            assert model.weight == plan.entries[m].weight or (plan.unmet and model.weight < plan.entries[m].weight)
            assert {d for ds in p.devices() for d in ds} <= set(group.tpus)
            assert {d for s in model.stages for d in s.devices} <= set(group.tpus)
            stages = validate_stage_map(graph, p.stages, p.num_stages)
            for e in graph.edges:  # precedence: no tensor flows back to an earlier segment
                assert stages[e.src] <= stages[e.dst]
            assert len(model.stages) == p.num_stages == len(plan.costs[m])
            if group.mode == OWN:
                assert all(s.dispatch == FREE and s.group == -1 for s in model.stages)
            else:  # the whole model on every TPU of the group, round robin
                assert p.num_stages == 1 and model.stages[0].devices == group.tpus
                assert model.stages[0].dispatch == ROUND_ROBIN and model.stages[0].group == gi
                assert p.first_tpu == group.tpus[0] and p.replicas == (len(group.tpus),)
        if group.mode == COCOMPILED:  # the compiler caches the group's models in its order
            ordered = cocompiled_costs([graphs[m] for m in group.models], spec)
            assert [plan.costs[m][0] for m in group.models] == list(ordered)
        if group.mode == SEPARATE:
            assert all(plan.models[m].reload_bytes == plan.costs[m][0].on_chip_bytes for m in group.models)
    assert plan.rates == pool_rates(plan.models, spec)
    for x, model in zip(plan.throughput_ips, plan.models):
        assert x == pytest.approx(model.weight / plan.rates.unit_s, rel=1e-12) and x > 0


@PROPERTY
@given(st.lists(placed_graphs, min_size=2, max_size=3), st.integers(0, 3), SPECS, st.lists(WEIGHTS, min_size=3, max_size=3))
def test_sharing_never_lowers_the_common_rate_below_own_tpus(graphs, extra, spec, weights):
    tpus = min(len(graphs) + extra, 5)
    plan = plan_pool(entries(graphs, weights[: len(graphs)]), tpus, spec)
    assert plan.own is not None and plan.objective == "weights" and plan.available == tpus
    assert 1 / plan.rates.unit_s >= (1 / plan.own.unit_s) * (1 - 1e-9)
    check_plan(plan, graphs, spec)
    alone = plan_pool(entries(graphs, weights[: len(graphs)]), tpus, spec, share=False)
    assert all(g.mode == OWN for g in alone.groups)
    assert alone.rates.unit_s == pytest.approx(plan.own.unit_s, rel=1e-12)  # the same search without sharing
    check_plan(alone, graphs, spec)


@PROPERTY
@given(st.lists(placed_graphs, min_size=2, max_size=3), SPECS, st.lists(WEIGHTS, min_size=3, max_size=3))
def test_fewer_tpus_than_models_share_and_serve_every_model(graphs, spec, weights):
    for tpus in range(1, len(graphs)):
        plan = plan_pool(entries(graphs, weights[: len(graphs)]), tpus, spec)
        assert plan.own is None
        assert any(len(g.models) > 1 for g in plan.groups)
        assert len(plan.groups) <= tpus
        check_plan(plan, graphs, spec)
        with pytest.raises(RespectPassError, match=rf"{tpus} TPU\(s\) for {len(graphs)} models without sharing"):
            plan_pool(entries(graphs), tpus, spec, share=False)


def test_one_tpu_holds_every_model():
    graphs = [A, B, C]
    plan = plan_pool(entries(graphs, [1.0, 2.0, 1.0]), 1, USB)
    assert plan.own is None and plan.tpus == 1 and len(plan.groups) == 1
    assert sorted(plan.groups[0].models) == [0, 1, 2] and plan.groups[0].tpus == (0,)
    check_plan(plan, graphs, USB)


def test_a_model_that_fits_two_tpus_gets_them():
    # A streams on one TPU (9e6 > the cache) and fits on two: alone it takes both, far faster
    one, two = plan_pool(entries([A]), 1, USB_SEPARATE), plan_pool(entries([A]), 2, USB_SEPARATE)
    assert two.groups[0].tpus == (0, 1) and two.plans[0].num_tpus == 2
    assert two.throughput_ips[0] > 10 * one.throughput_ips[0]
    assert one.own is not None and one.own.unit_s == one.rates.unit_s  # one model: its own TPUs
    check_plan(two, [A], USB_SEPARATE)


def test_own_groups_number_their_tpus_consecutively():
    graphs = [A, B, C]
    plan = plan_pool(entries(graphs), 5, USB_SEPARATE, share=False)
    assert [g.mode for g in plan.groups] == [OWN] * 3
    firsts = [g.tpus[0] for g in plan.groups]
    assert firsts == sorted(firsts) and firsts[0] == 0
    for g in plan.groups:
        assert plan.plans[g.models[0]].first_tpu == g.tpus[0]
    check_plan(plan, graphs, USB_SEPARATE)


# -- rates


@pytest.mark.parametrize("spec", [USB, USB_SEPARATE], ids=lambda s: s.name)
def test_tiny_rates_are_met_with_the_fewest_tpus(spec):
    graphs = [A, B]
    shared = plan_pool(entries(graphs, [1.0, 2.0]), 4, spec, rates=True)
    assert shared.objective == "rates" and shared.unmet == () and shared.available == 4
    assert shared.tpus == 1 and len(shared.groups) == 1  # both on one TPU
    assert shared.throughput_ips[0] >= 1.0 and shared.throughput_ips[1] >= 2.0
    check_plan(shared, graphs, spec)
    own = plan_pool(entries(graphs, [1.0, 2.0]), 4, spec, rates=True, share=False)
    assert own.unmet == () and own.tpus == 2 and [g.tpus for g in own.groups] == [(0,), (1,)]
    check_plan(own, graphs, spec)


def test_a_rate_that_needs_a_second_tpu_gets_it():
    alone_one = plan_pool(entries([A]), 1, USB_SEPARATE).throughput_ips[0]
    plan = plan_pool(entries([A], [2 * alone_one]), 4, USB_SEPARATE, rates=True)
    assert plan.unmet == () and plan.tpus == 2 and plan.throughput_ips[0] >= 2 * alone_one


def test_a_huge_rate_is_unmet_and_named():
    plan = plan_pool(entries([A, B], [1e9, 2.0]), 4, USB_SEPARATE, rates=True)
    assert plan.tpus == 4  # every TPU tried
    assert plan.unmet[0].startswith("m0: 1e+09/s cannot be met: at most ")
    assert "/s on all 4 TPUs alone; " in plan.unmet[0] and plan.unmet[0].endswith("/s in this plan")
    # the rate within reach is met in full, and the other model gets the most it can beside it
    assert len(plan.unmet) == 1 and plan.throughput_ips[1] >= 2.0 * (1 - 1e-6)
    check_plan(plan, [A, B], USB_SEPARATE)


def test_rates_met_alone_but_not_together_say_so():
    best = plan_pool(entries([A]), 2, USB_SEPARATE).throughput_ips[0]  # A on two TPUs
    plan = plan_pool(entries([A, A], [0.7 * best, 0.7 * best]), 2, USB_SEPARATE, rates=True)
    assert len(plan.unmet) == 2
    for i, line in enumerate(plan.unmet):
        assert line.startswith(f"m{i}: ") and "not met beside the other models" in line


# -- bad inputs


@pytest.mark.parametrize(
    ("tpus", "weights", "message"),
    [
        (0, [1.0], "number of TPUs in a pool must be between 1 and 16, got 0"),
        (17, [1.0], "number of TPUs in a pool must be between 1 and 16, got 17"),
        (-1, [1.0], "between 1 and 16, got -1"),
        (8, [1.0] * 7, "a pool plans at most 6 models, got 7"),
        (2, [], "a pool needs at least one model"),
        (2, [1.0, 0.0], "m1: weight or rate must be a positive number, got 0.0"),
        (2, [-1.0], "m0: weight or rate must be a positive number, got -1.0"),
        (2, [math.nan], "m0: weight or rate must be a positive number, got nan"),
        (2, [math.inf], "m0: weight or rate must be a positive number, got inf"),
    ],
)
def test_bad_inputs_are_refused_with_a_clear_message(tpus, weights, message):
    with pytest.raises(RespectPassError, match=message.replace("(", r"\(").replace(")", r"\)")):
        plan_pool([PoolEntry(f"m{i}", C, w) for i, w in enumerate(weights)], tpus, USB)


def test_an_unknown_scheduler_is_refused():
    with pytest.raises(RespectPassError, match="unknown scheduler 'nope'"):
        plan_pool(entries([C]), 1, USB, scheduler="nope")


def test_without_sharing_each_model_needs_a_tpu():
    with pytest.raises(RespectPassError, match=r"2 TPU\(s\) for 3 models without sharing"):
        plan_pool(entries([A, B, C]), 2, USB, share=False)
    plan_pool(entries([A, B, C]), 3, USB, share=False)  # enough
