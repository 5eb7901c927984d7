"""The profiling scheduler: libcoral's partition_with_profiling, ported, with the simulator as device."""
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from conftest import chain_graph
from hardware import USB, stage_costs
from respect_pass.orders import libcoral_topological_order
from respect_pass.schedulers import get_scheduler
from respect_pass.schedulers.profiling import (
    INT64_MAX,
    ProfilingPartitioner,
    bisect_partition,
    profiling_schedule,
)
from strategies import BRANCHY, random_dags
from tflite_io import StageMapError, read, validate_stage_map


def per_op_latency(num_ops):
    """The mock device of libcoral's profiling_based_partitioner_test.cc: 1 us per op."""
    return [1000 * n for n in num_ops]


# Expected values from libcoral's own mock tests (inception_v3: 132 ops, the output op last).
@pytest.mark.parametrize("segments, target, last, partition", [
    (2, 50000, 82000, [50, 82]),
    (4, 30000, 42000, [30, 30, 30, 42]),
])
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
            out.append(1000 * sum(cost[start:start + n]))
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


def test_too_few_ops_is_a_clear_error():
    with pytest.raises(StageMapError, match="too few for 4 segments"):
        ProfilingPartitioner(5, 4, 4, per_op_latency).on_target(1000, 2)


def test_libcoral_order_is_topological_with_sinks_last():
    g = read(BRANCHY)
    order = libcoral_topological_order(g)
    pos = {v: i for i, v in enumerate(order)}
    assert sorted(order) == list(range(g.num_ops))
    assert all(pos[e.src] < pos[e.dst] for e in g.edges)
    sinks = [v for v in range(g.num_ops) if not g.succs[v]]
    assert sorted(pos[v] for v in sinks) == list(range(g.num_ops - len(sinks), g.num_ops))


@settings(max_examples=60, deadline=None)
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
    assert dict(plan.stats)["device_runs"] > 0 and plan.scheduler == "profiling"


def test_one_segment_and_bad_options():
    g = chain_graph([10, 20, 30])
    assert profiling_schedule(g, 1, USB).stages == (0, 0, 0)
    with pytest.raises(StageMapError, match="partition_search_step and diff_threshold_ns must be >= 1"):
        profiling_schedule(g, 2, USB, partition_search_step=0)
    with pytest.raises(StageMapError, match="must be >= 1, got 1 and 0"):
        profiling_schedule(g, 2, USB, diff_threshold_ns=0)
