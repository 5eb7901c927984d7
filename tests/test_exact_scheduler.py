"""The exact (CP-SAT) scheduler against the brute-force oracle, and its contract."""

import pytest
from conftest import chain_graph, diamond_graph
from crafting import EMBEDDED
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from strategies import examples, random_dags

from hardware import PCIE, USB, EdgeTpuSpec, stage_costs
from respect_pass.objectives import DEFAULT_ALPHA, latency_key, memory_objective
from respect_pass.oracle import all_monotone_maps, best_map
from respect_pass.schedulers.compiler import compiler_schedule
from respect_pass.schedulers.exact import exact_schedule
from respect_pass.schedulers.exact_model import stage_ranges
from tflite_io import Op, OpGraph, StageMapError, TensorInfo, read, validate_stage_map

#: Unequal link bandwidths, a per-op overhead and a small cache (streaming on most random graphs).
ODD = EdgeTpuSpec(
    "odd",
    efficiency={"conv": 0.3, "depthwise": 0.1},
    elementwise_s_per_byte=1e-9,
    t_invoke_s=5e-5,
    t_op_s=2e-6,
    cache_bytes=2_000_000,
    stream_bytes_per_s=3e8,
    io_bytes_per_s=7e8,
)
SPECS = st.sampled_from([USB, PCIE, ODD])
QUICK = dict(deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])


def check_plan(g, k, plan, spec):
    assert plan.scheduler == "exact" and plan.num_stages == k
    assert validate_stage_map(g, plan.stages, k) == plan.stages
    assert plan.stage_ms == tuple(c.ms for c in stage_costs(g, plan.stages, k, spec))


@settings(max_examples=examples(150), **QUICK)
@given(random_dags(max_ops=9), st.integers(2, 3), SPECS)
def test_latency_matches_oracle(g, k, spec):
    """Where nothing streams the CP-SAT model is exact: the oracle's optimum, proven. Where parameters
    stream it is a relaxation: its bound never exceeds the oracle's optimum, and a plan it calls optimal is."""
    fits = spec.with_(cache_bytes=10**12)
    for s, exact_model in ((fits, True), (spec, False)):
        value, best = best_map(g, k, s)
        assume(best is not None)
        plan = exact_schedule(g, k, s)
        check_plan(g, k, plan, s)
        assert plan.objective == "latency"
        bottleneck, latency = latency_key(g, plan.stages, k, s)
        assert plan.lower_bound_ms <= value[0] * (1 + 1e-6) and bottleneck >= value[0] * (1 - 1e-9)
        if exact_model:
            assert plan.optimal is True and plan.stats["latency_optimal"] == 1
        if plan.optimal:
            assert bottleneck == pytest.approx(value[0], rel=1e-6)
            assert latency == pytest.approx(value[1], rel=1e-6)
            assert plan.lower_bound_ms == pytest.approx(bottleneck, rel=1e-6)


@settings(max_examples=examples(120), **QUICK)
@given(random_dags(max_ops=9), st.integers(2, 3), st.sampled_from([DEFAULT_ALPHA, 1e-6, 0.0, 1.0]))
def test_memory_matches_oracle(g, k, alpha):
    value, best = best_map(g, k, USB, objective="memory", alpha=alpha)
    assume(best is not None)
    plan = exact_schedule(g, k, USB, objective="memory", alpha=alpha)
    check_plan(g, k, plan, USB)
    assert plan.optimal is True and plan.objective == "memory" and plan.lower_bound_ms is None
    stats = dict(plan.stats)
    assert memory_objective(g, plan.stages, k, alpha) == pytest.approx(value, rel=1e-9, abs=1e-12)
    assert stats["objective_value"] == memory_objective(g, plan.stages, k, alpha)
    assert stats["objective_bound"] == pytest.approx(value, rel=1e-6, abs=1e-9)


@settings(max_examples=examples(40), **QUICK)
@given(random_dags(min_ops=10, max_ops=16), st.integers(2, 5), st.sampled_from(["latency", "memory"]))
def test_never_worse_than_the_dp_hint(g, k, objective):
    dp = pytest.importorskip("respect_pass.schedulers.dp")
    try:
        start = dp.dp_schedule(g, k, USB, objective=objective).stages
    except StageMapError:
        return
    plan = exact_schedule(g, k, USB, objective=objective, time_limit_s=20, workers=1, seed=3)
    check_plan(g, k, plan, USB)
    if objective == "latency":
        assert latency_key(g, plan.stages, k, USB)[0] <= latency_key(g, start, k, USB)[0] * (1 + 1e-9)
        assert plan.lower_bound_ms <= plan.predicted_bottleneck_ms
    else:
        assert memory_objective(g, plan.stages, k) <= memory_objective(g, start, k) + 1e-9
        assert plan.stats["objective_bound"] <= plan.stats["objective_value"] + 1e-9


@settings(max_examples=examples(60), deadline=None)
@given(random_dags(max_ops=9), st.integers(2, 3))
def test_infeasible_k_raises(g, k):
    if next(all_monotone_maps(g, k), None) is not None:
        return
    with pytest.raises(StageMapError):
        exact_schedule(g, k, USB)


@settings(max_examples=examples(60), deadline=None)
@given(random_dags(max_ops=8), st.integers(1, 3))
def test_stage_ranges_hold_every_valid_map(g, k):
    lo, hi = stage_ranges(g, k)
    for m in all_monotone_maps(g, k):
        assert all(lo[v] <= s <= hi[v] for v, s in enumerate(m))


def test_early_output_and_too_many_stages_raise():
    g = chain_graph([10, 20, 30])
    early = OpGraph("early", g.ops, g.tensors, g.inputs, (1, 3))  # op 0 produces a model output
    with pytest.raises(StageMapError, match="no valid 2-stage pipeline"):
        exact_schedule(early, 2)
    with pytest.raises(StageMapError):
        exact_schedule(g, 4)
    with pytest.raises(StageMapError):
        exact_schedule(g, 0)


def test_one_stage():
    g = diamond_graph()
    plan = exact_schedule(g, 1)
    assert plan.stages == (0, 0, 0, 0) and plan.optimal is True
    check_plan(g, 1, plan, USB)


def test_hint_is_accepted_and_checked():
    g = diamond_graph()
    value, best = best_map(g, 3, USB)
    for hint in [best, (0, 2, 1, 2)]:
        plan = exact_schedule(g, 3, USB, hint=hint)
        assert plan.optimal and latency_key(g, plan.stages, 3, USB) == pytest.approx(value, rel=1e-6)
    with pytest.raises(StageMapError):
        exact_schedule(g, 3, USB, hint=(0, 0, 0, 0))


def presolve_bug_graph():
    """An instance on which OR-Tools 9.15's default presolve certifies a wrong optimum (google/or-tools#5293)."""
    T = [TensorInfo(i, f"t{i}", "int8", (64,), 64) for i in range(9)]
    T[4] = TensorInfo(4, "t4", "int8", (4096,), 4096)
    io = [((0,), 1), ((1,), 2), ((2,), 3), ((2,), 4), ((1,), 5), ((3,), 6), ((4,), 7), ((6,), 8)]
    macs = [0, 0, 0, 1, 0, 107673, 0, 0]
    ops = tuple(Op(i, "ADD", ins, (out,), 0, macs[i]) for i, (ins, out) in enumerate(io))
    return OpGraph("presolve_bug", ops, tuple(T), (0,), (5, 7, 8))


def test_known_presolve_bug_instance():
    g = presolve_bug_graph()
    value, best = best_map(g, 2, USB)
    plan = exact_schedule(g, 2, USB, hint=(0, 1, 1, 1, 1, 1, 1, 1))  # the wrong "optimum" as the hint
    assert plan.optimal and latency_key(g, plan.stages, 2, USB) == pytest.approx(value, rel=1e-9)


@pytest.fixture(scope="module")
def embedded_graph():
    return read(EMBEDDED)


def test_embedded_model_beats_the_compiler(embedded_graph):
    g = embedded_graph
    plan = exact_schedule(g, 3, USB, time_limit_s=60)
    check_plan(g, 3, plan, USB)
    compiler = max(c.ms for c in stage_costs(g, compiler_schedule(g, 3).stages, 3, USB))
    assert plan.optimal is True
    assert plan.predicted_bottleneck_ms <= compiler
    assert plan.lower_bound_ms <= plan.predicted_bottleneck_ms * (1 + 1e-9)


def test_tiny_time_limit_still_returns_a_valid_plan(embedded_graph):
    g = embedded_graph
    for objective in ("latency", "memory"):
        plan = exact_schedule(g, 5, USB, objective=objective, time_limit_s=0.001)
        check_plan(g, 5, plan, USB)
        assert plan.optimal in (True, False)
