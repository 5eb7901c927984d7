"""The profiling scheduler: libcoral's partition_with_profiling, ported, with the simulator as device."""

import libcoral_port as lc
import pytest
from conftest import ROOT, chain_graph
from hypothesis import given, settings
from hypothesis import strategies as st
from strategies import BRANCHY, examples, random_dags

from hardware import USB, stage_costs
from respect_pass.orders import libcoral_topological_order
from respect_pass.schedulers import get_scheduler
from respect_pass.schedulers.profiling import (
    INT64_MAX,
    LibcoralAbort,
    ProfilingPartitioner,
    _simulated_device,
    bisect_partition,
    profiling_schedule,
)
from tflite_io import StageMapError, read, validate_stage_map


def per_op_latency(num_ops):
    """The mock device of libcoral's profiling_based_partitioner_test.cc: 1 us per op."""
    return [1000 * n for n in num_ops]


# Expected values from libcoral's own mock tests (inception_v3: 132 ops, the output op last).
@pytest.mark.parametrize(
    "segments, target, last, partition",
    [
        (2, 50000, 82000, [50, 82]),
        (4, 30000, 42000, [30, 30, 30, 42]),
    ],
)
def test_on_target_matches_libcoral_mock_tests(segments, target, last, partition):
    p = ProfilingPartitioner(132, 131, segments, per_op_latency)
    assert p.on_target(target, 1) == last
    assert p.partition == partition


def test_no_partition_for_an_impossible_target():
    p = ProfilingPartitioner(132, 131, 3, per_op_latency)
    assert p.on_target(500, 1) == INT64_MAX and p.partition == []


def test_bisection_balances_the_mock_device():
    assert bisect_partition(ProfilingPartitioner(132, 131, 4, per_op_latency), 10000, 60000, 1000, 1) == ([33] * 4, 6)
    # with partition_search_step 16 segments grow and shrink 16 ops at a time
    best, _ = bisect_partition(ProfilingPartitioner(132, 131, 4, per_op_latency), 10000, 60000, 1000, 16)
    assert best == [36, 32, 32, 32]


def test_bounds_already_close_means_no_search():
    p = ProfilingPartitioner(132, 131, 2, per_op_latency)
    assert bisect_partition(p, 10000, 10500, 1000, 1) == ([], 0) and p.measurements == 0


def test_cache_keyed_by_start_and_length():
    calls = []
    p = ProfilingPartitioner(10, 9, 2, lambda n: calls.append(list(n)) or per_op_latency(n))
    assert p.analyze([6, 4], 0) == 6000
    assert p.analyze([6, 4], 1) == 4000  # cached by the first run
    assert p.analyze([6, 3, 1][:2] + [], 0) == 6000  # same (start, len) for segment 0
    assert calls == [[6, 4]] and p.measurements == 1


def test_backtracks_when_later_segments_cannot_be_placed():
    # ops 0-3 are cheap, op 4 is expensive (9 us) unless it starts a segment... of its own and
    # is not followed: the greedy first choice [5, 1, 1] fails for segment 1, so segment 0 shrinks.
    cost = [1, 1, 1, 1, 9, 1, 1]

    def device(num_ops):
        out, start = [], 0
        for n in num_ops:
            out.append(1000 * sum(cost[start : start + n]))
            start += n
        return out

    p = ProfilingPartitioner(7, 6, 3, device)
    last = p.on_target(9000, 1)
    assert last < INT64_MAX and max(device(p.partition)) <= 9000 and sum(p.partition) == 7
    assert p.partition == [4, 1, 2]


def test_compile_failures_are_remembered():
    runs = []

    def device(num_ops):
        runs.append(list(num_ops))
        return {0} if num_ops[0] > 3 else per_op_latency(num_ops)

    p = ProfilingPartitioner(6, 5, 2, device)
    assert p.on_target(10_000, 1) == 3000 and p.partition == [3, 3]
    assert runs == [[5, 1], [4, 2], [3, 3]]
    assert p.analyze([5, 1], 0) == -1 and len(runs) == 3  # known failure: not run again


def test_too_few_ops_for_the_step_libcoral_aborts_we_use_a_smaller_step():
    literal = ProfilingPartitioner(5, 4, 4, per_op_latency, libcoral=True)
    with pytest.raises(LibcoralAbort, match=r"CHECK_GT\(num_ops\[0\], 0\) failed.*5 ops are too few for 4 segments"):
        literal.on_target(1000, 2)
    corrected = ProfilingPartitioner(5, 4, 4, per_op_latency)
    assert corrected.usable_step(2) == 1
    assert corrected.on_target(2000, 2) == 1000 and corrected.partition == [2, 1, 1, 1]


def test_no_room_before_the_first_sink_libcoral_aborts_in_search_we_use_a_smaller_step():
    # 20 ops, the last 12 after the first sink, K=4, step 4: num_ops[0] = 8 > 0, but SearchPartition
    # sets segment 0 to 20 - 2*4 - 12 = 0
    literal = ProfilingPartitioner(20, 8, 4, per_op_latency, libcoral=True)
    with pytest.raises(LibcoralAbort, match=r"CHECK_GT\(candidate_partition\[0\], 0\)"):
        literal.on_target(10_000, 4)
    corrected = ProfilingPartitioner(20, 8, 4, per_op_latency)
    assert corrected.usable_step(4) == 3
    assert corrected.on_target(10_000, 4) == 12_000 and corrected.partition == [2, 3, 3, 12]
    with pytest.raises(StageMapError, match="too few for 9 segments"):  # 7 ops before the last segment
        ProfilingPartitioner(10, 7, 9, per_op_latency).on_target(1000, 1)


def test_libcoral_order_is_topological_with_sinks_last():
    g = read(BRANCHY)
    order = libcoral_topological_order(g)
    pos = {v: i for i, v in enumerate(order)}
    assert sorted(order) == list(range(g.num_ops))
    assert all(pos[e.src] < pos[e.dst] for e in g.edges)
    sinks = [v for v in range(g.num_ops) if not g.succs[v]]
    assert sorted(pos[v] for v in sinks) == list(range(g.num_ops - len(sinks), g.num_ops))


@settings(max_examples=examples(60), deadline=None)
@given(random_dags(), st.integers(2, 4), st.sampled_from([1, 10_000, 1_000_000]))
def test_valid_plans_never_worse_than_the_initial_upper_bound(graph, k, threshold):
    k = min(k, min(graph.output_ops) + 1)  # the compiler split (initial bounds) must exist
    plan = profiling_schedule(graph, k, USB, diff_threshold_ns=threshold)
    validate_stage_map(graph, plan.stages, k)
    got = max(c.total_s for c in stage_costs(graph, plan.stages, k, USB))
    compiler = get_scheduler("compiler")(graph, k, USB)
    upper = max(c.total_s for c in stage_costs(graph, compiler.stages, k, USB))
    assert round(got * 1e9) <= round(upper * 1e9)


def test_branchy_model_improves_on_the_compiler_split():
    g = read(BRANCHY)
    plan = profiling_schedule(g, 3, USB, diff_threshold_ns=1000)
    compiler = get_scheduler("compiler")(g, 3, USB)
    ms = lambda p: max(c.ms for c in stage_costs(g, p.stages, 3, USB))  # noqa: E731
    assert ms(plan) < ms(compiler)
    assert plan.stats["device_runs"] > 0 and plan.scheduler == "profiling"


def test_one_segment_and_bad_options():
    g = chain_graph([10, 20, 30])
    plan = profiling_schedule(g, 1, USB)
    assert plan.stages == (0, 0, 0)
    assert plan.stats["libcoral_outcome"] == "fatal: num_segments must be at least 2"
    with pytest.raises(StageMapError, match="partition_search_step and diff_threshold_ns must be >= 1"):
        profiling_schedule(g, 2, USB, partition_search_step=0)
    with pytest.raises(StageMapError, match="must be >= 1, got 1 and 0"):
        profiling_schedule(g, 2, USB, diff_threshold_ns=0)


# ----------------------------------------------------------------- against the literal port of libcoral

MOBILENET = ROOT / "respect_pass" / "data" / "mobilenet_v2_0.35_96_int8.tflite"

#: libcoral CHECK (the port's key) -> how our libcoral_outcome names it
CHECK_NAMES = {
    "num_segments must be at least 2.": "fatal: num_segments must be at least 2",
    "Can not compile initial partition.": "CHECK failure: Can not compile initial partition",
    "upper_bound > lower_bound": "CHECK_GT(upper_bound, lower_bound)",
    "num_ops[0] > 0": "CHECK_GT(num_ops[0], 0)",
    "candidate_partition[segment_index] > 0": "CHECK_GT(candidate_partition[",
    "Sum of num_segment_ops must be equal to model's nodes number.": "Sum of num_segment_ops must be equal",
    "sum(num_ops) == total_num_ops": "CHECK_EQ(sum of num_ops, total_num_ops)",
    "last_segment_latency > 0": "CHECK_GT(last_segment_latency, 0)",
    "Failed to find valid partition that meets the latency target.": "Failed to find valid partition",
}


@pytest.fixture(scope="module", params=["mobilenet", "branchy"])
def model(request):
    return read(MOBILENET if request.param == "mobilenet" else BRANCHY)


def segments_of(order, num_ops):
    out, start = [], 0
    for n in num_ops:
        out.append(sorted(order[start : start + n]))
        start += n
    return out


@pytest.mark.parametrize("k", range(1, 9))
@pytest.mark.parametrize("step, threshold", [(1, 1000), (1, 1_000_000), (2, 1000), (4, 100_000), (8, 100_000), (16, 1000)])
def test_outcome_and_segments_match_the_literal_libcoral_port(model, k, step, threshold):
    """Where libcoral writes segments ours are the same; where it aborts or writes nothing,
    scheduler_stats says so and the plan is still a valid pipeline."""
    order = lc.TopologicalSort(model)
    device = _simulated_device(model, order, USB)
    plan = profiling_schedule(model, k, USB, diff_threshold_ns=threshold, partition_search_step=step)
    validate_stage_map(model, plan.stages, k)
    s = dict(plan.stats)
    compiler = get_scheduler("compiler")(model, k, USB)
    try:
        written = lc.partition_with_profiling(model, device, k, threshold, step)
    except lc.Check as check:
        assert s["libcoral_would_abort"] is True
        assert CHECK_NAMES[check.key] in s["libcoral_outcome"]
        if s.get("result", "").startswith("compiler split"):
            assert plan.stages == compiler.stages
        return
    assert s["libcoral_would_abort"] is False
    if written is None:
        assert s["libcoral_outcome"].startswith("not run: the initial bounds are within diff_threshold_ns")
        assert plan.stages == compiler.stages and s["result"].startswith("compiler split")
    else:
        assert s["libcoral_outcome"] == "ok" and s["result"] == "search" and "libcoral_partition" not in s
        assert [sorted(plan.ops_of(i)) for i in range(k)] == segments_of(order, written)


def test_reset_loop_overwrites_placed_segments_from_k_step_plus_4():
    """SearchPartition resets segments partition_search_step + 1 .. K - 2, not segment_index + 1 .. K - 2:
    on the branchy model with step 1, K=4 is fine and K=5 hands GetStrategyFromNumOps a candidate
    that no longer covers the model."""
    g = read(BRANCHY)
    device = _simulated_device(g, lc.TopologicalSort(g), USB)
    assert lc.partition_with_profiling(g, device, 4, 1000, 1) is not None
    with pytest.raises(lc.Check, match="Sum of num_segment_ops"):
        lc.partition_with_profiling(g, device, 5, 1000, 1)
    plan = profiling_schedule(g, 5, USB, diff_threshold_ns=1000)
    s = dict(plan.stats)
    assert s["libcoral_would_abort"] is True and s["result"] == "search"
    assert "reset loop" in s["libcoral_outcome"] and "K=5 >= partition_search_step + 4" in s["libcoral_outcome"]
    validate_stage_map(g, plan.stages, 5)


def test_failed_to_find_valid_partition_returns_the_compiler_split_and_says_so():
    g = read(MOBILENET)
    with pytest.raises(lc.Check, match="Failed to find valid partition"):
        lc.partition_with_profiling(g, _simulated_device(g, lc.TopologicalSort(g), USB), 2, 100_000, 8)
    plan = profiling_schedule(g, 2, USB, diff_threshold_ns=100_000, partition_search_step=8)
    s = dict(plan.stats)
    assert s["libcoral_outcome"] == "CHECK failure: Failed to find valid partition that meets the latency target"
    assert s["result"] == "compiler split (no target latency gave a partition)" and s["targets"] > 0
    assert plan.stages == get_scheduler("compiler")(g, 2).stages


def test_compiler_abort_is_libcoral_initial_partition_failure():
    g = read(MOBILENET)  # the compiler's split CHECK-fails from K=4 on (an op larger than total/K + 1)
    plan = profiling_schedule(g, 4, USB, diff_threshold_ns=1000)
    s = dict(plan.stats)
    assert s["libcoral_outcome"].startswith(
        "CHECK failure: Can not compile initial partition "
        "(edgetpu_compiler --num_segments=4: CHECK_GT(num_ops_per_segment[2], 0)"
    )
    assert s["result"] == "search" and s["device_runs"] > 0


@settings(max_examples=examples(150), deadline=None)
@given(random_dags(), st.integers(2, 7), st.sampled_from([1, 2, 3]), st.sampled_from([1, 1000, 100_000]))
def test_random_dags_against_the_literal_port(graph, k, step, threshold):
    try:
        compiler = get_scheduler("compiler")(graph, k, USB)
    except StageMapError:
        return
    order = lc.TopologicalSort(graph)
    plan = profiling_schedule(graph, k, USB, diff_threshold_ns=threshold, partition_search_step=step)
    validate_stage_map(graph, plan.stages, k)
    s = dict(plan.stats)
    try:
        written = lc.partition_with_profiling(graph, _simulated_device(graph, order, USB), k, threshold, step)
    except lc.Check as check:
        assert s["libcoral_would_abort"] is True and CHECK_NAMES[check.key] in s["libcoral_outcome"]
        return
    if written is None:
        assert s["libcoral_outcome"].startswith("not run") and plan.stages == compiler.stages
    else:
        assert s["libcoral_outcome"] == "ok" and s["result"] == "search"
        assert [sorted(plan.ops_of(i)) for i in range(k)] == segments_of(order, written)
