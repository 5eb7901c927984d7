"""The compiler scheduler: libcoral's ParameterCountBasedPartitioner, checked against a literal port."""

import dataclasses
import random

import libcoral_port as lc
import pytest
from conftest import ROOT, chain_graph, diamond_graph
from hypothesis import given, settings
from hypothesis import strategies as st
from strategies import BRANCHY, examples, placed_dags, random_dags

from respect_pass.orders import libcoral_topological_order, random_stage_map
from respect_pass.schedulers import SCHEDULERS, get_scheduler
from respect_pass.schedulers.compiler import (
    compiler_schedule,
    compiler_split,
    libcoral_parameter_sizes,
    param_balanced_sizes,
)
from tflite_io import Op, OpGraph, RespectPassError, StageMapError, TensorInfo, read, validate_stage_map

MOBILENET = ROOT / "respect_pass" / "data" / "mobilenet_v2_0.35_96_int8.tflite"

#: libcoral CHECK (the port's key) -> how our libcoral_outcome names it
CHECK_NAMES = {
    "max_segment_end_exe_idx >= node_i": "CHECK_GE(max_segment_end_exe_idx, node_i)",
    "num_ops_per_segment[i] > 0": "CHECK_GT(num_ops_per_segment[",
    "Only one output tensor per operator.": "Only one output tensor per operator",
    "num_non_weight_tensors > 0": "CHECK_GT(num_non_weight_tensors, 0)",
}


@pytest.fixture(scope="module", params=["mobilenet", "branchy"])
def model(request):
    return read(MOBILENET if request.param == "mobilenet" else BRANCHY)


def stats(plan):
    return dict(plan.stats)


def segments(plan):
    return [sorted(plan.ops_of(k)) for k in range(plan.num_stages)]


def test_balanced_chain_hand_computed():
    # total 400, K=2 -> average 201: 100+100 fits, +100 would exceed
    g = chain_graph([100, 100, 100, 100])
    assert param_balanced_sizes(g, 2) == [2, 2]
    # K=3 -> average 134: one op each for the first two segments
    assert param_balanced_sizes(g, 3) == [1, 1, 2]


def test_cut_before_exceeding_average_like_libcoral():
    g = chain_graph([10, 10, 500, 10, 10])
    # average 271: segment 0 takes 10+10 and stops before 500
    assert param_balanced_sizes(g, 2) == [2, 3]
    assert stats(compiler_schedule(g, 2)) == {"libcoral_outcome": "ok", "libcoral_would_abort": False}


def test_every_segment_gets_an_op_only_where_libcoral_aborts():
    # average 1003 // 3 + 1 = 335: libcoral closes segments 0 and 1 empty and CHECK-fails; we give
    # segment 0 op 0, then segment 1 takes ops 1-2 (it may run up to op 2, leaving op 3 for the last).
    g = chain_graph([1000, 1, 1, 1])
    with pytest.raises(lc.Check, match=r"num_ops_per_segment\[i\] > 0"):
        lc.ParameterCountBasedPartitioner(g).GetStrategy(3)
    plan = compiler_schedule(g, 3)
    assert param_balanced_sizes(g, 3) == [1, 2, 1]
    s = stats(plan)
    assert s["libcoral_would_abort"] is True
    assert s["libcoral_outcome"].startswith("CHECK_GT(num_ops_per_segment[0], 0) failed: segment 0 is empty (op 0 ")
    assert compiler_split(g, 3).libcoral_num_ops is None


def test_libcoral_topological_order_and_last_segment_rule_on_the_diamond():
    g = diamond_graph()  # libcoral visits op 2 before op 1 (last pushed, first popped)
    assert libcoral_topological_order(g) == [0, 2, 1, 3]
    plan = compiler_schedule(g, 4)
    assert plan.stages == (0, 2, 1, 3)  # one op per segment along [0, 2, 1, 3]
    assert stats(plan)["libcoral_would_abort"] is True  # op 2 (1000 B) alone exceeds 2007 // 4 + 1
    assert compiler_schedule(g, 2).stages == (0, 1, 1, 1)  # average 1004: op 0 (7 B), then op 2 (1000 B) exceeds
    with pytest.raises(StageMapError, match="cannot split 4 ops into 5"):
        compiler_schedule(g, 5)


def test_branchy_two_segments_follow_libcoral_not_the_file_order():
    """tiny_inception has two outputs (ops 11 and 33): libcoral's order puts op 11's head (ops 10, 11) at
    the very end, so K=2 is [22, 12] ops (the file-order split with the cut at op 11 gave [11, 23])."""
    g = read(BRANCHY)
    order = libcoral_topological_order(g)
    assert order == [
        0,
        7,
        8,
        4,
        5,
        6,
        2,
        3,
        1,
        9,
        12,
        19,
        20,
        17,
        18,
        16,
        13,
        14,
        15,
        21,
        22,
        29,
        30,
        26,
        27,
        28,
        24,
        25,
        23,
        31,
        32,
        10,
        33,
        11,
    ]
    plan = compiler_schedule(g, 2)
    assert [len(s) for s in segments(plan)] == [22, 12]
    assert segments(plan)[1] == sorted(order[22:]) == [10, 11, 23, 24, 25, 26, 27, 28, 30, 31, 32, 33]
    assert stats(plan) == {"libcoral_outcome": "ok", "libcoral_would_abort": False}


def test_parameter_sizes_as_libcoral_counts_them():
    g = read(BRANCHY)
    assert libcoral_parameter_sizes(g) == lc.CalculateParameterSizes(g)
    # a custom op counts 0, a constant read twice counts twice
    t = (
        TensorInfo(0, "x", "int8", (4,), 4),
        TensorInfo(1, "w", "int8", (8,), 8, buffer=1),
        TensorInfo(2, "y", "int8", (4,), 4),
        TensorInfo(3, "z", "int8", (4,), 4),
    )
    ops = (Op(0, "ADD", (0, 1, 1), (2,), 8, 1), Op(1, "CUSTOM", (2, 1), (3,), 8, 1, "post"))
    g2 = OpGraph("g", ops, t, (0,), (3,))
    assert libcoral_parameter_sizes(g2) == lc.CalculateParameterSizes(g2) == [16, 0]


@pytest.mark.parametrize("k", range(1, 11))
def test_matches_the_literal_libcoral_port(model, k):
    """Segment op lists equal libcoral's wherever libcoral gives them; elsewhere a valid plan, flagged."""
    plan = compiler_schedule(model, k)
    assert validate_stage_map(model, plan.stages, k) == plan.stages
    assert plan.num_stages == k and plan.scheduler == "compiler"
    assert lc.TopologicalSort(model) == libcoral_topological_order(model)
    if k == 1:  # edgetpu_compiler --num_segments=1: no partitioner (whose GetStrategy CHECKs K > 1)
        assert segments(plan) == [list(range(model.num_ops))] and not stats(plan)["libcoral_would_abort"]
        return
    try:
        expected = lc.ParameterCountBasedPartitioner(model).GetStrategy(k)
    except lc.Check as check:
        assert stats(plan)["libcoral_would_abort"] is True
        assert CHECK_NAMES[check.key] in stats(plan)["libcoral_outcome"]
        assert all(len(s) >= 1 for s in segments(plan))
    else:
        assert segments(plan) == [sorted(s) for s in expected]
        assert stats(plan) == {"libcoral_outcome": "ok", "libcoral_would_abort": False}


def test_where_libcoral_aborts_on_the_two_models():
    mobilenet = read(MOBILENET)
    aborts = {k for k in range(2, 11) if stats(compiler_schedule(mobilenet, k))["libcoral_would_abort"]}
    assert aborts == set(range(4, 11))  # op 61 (148480 B) alone exceeds total/K + 1 from K=4 on
    branchy = read(BRANCHY)
    aborts = {k for k in range(2, 11) if stats(compiler_schedule(branchy, k))["libcoral_would_abort"]}
    assert aborts == {10}  # op 27 (1344 B) alone exceeds 12360 // 10 + 1


def test_output_op_consumed_inside_is_pinned_last_and_the_correction_recorded():
    # chain 0 -> 1 -> 2 -> 3 where op 1's output is also a model output: libcoral only keeps the sink
    # (op 3) last and cuts [2, 2]; the pipeline needs op 1 (and so 2, 3) in the last stage.
    g = chain_graph([100, 100, 100, 100])
    g = dataclasses.replace(g, outputs=(2, 4))
    assert lc.ParameterCountBasedPartitioner(g).GetNumOpsPerSegment(2) == [2, 2]
    plan = compiler_schedule(g, 2)
    assert plan.stages == (0, 1, 1, 1)
    s = stats(plan)
    assert s["libcoral_would_abort"] is False and s["libcoral_outcome"] == "ok"
    assert s["correction"] == "cut 1 moved from 2 to 1 (op 1 (CONV_2D) is pinned to the last stage)"


def test_host_ops_pinned_first_move_the_first_cut():
    g = dataclasses.replace(chain_graph([1, 1000, 1, 1]), host_ops=frozenset({0, 1}))
    assert g.first_stage_ops == {0, 1}
    assert lc.ParameterCountBasedPartitioner(g).GetNumOpsPerSegment(2) == [1, 3]
    plan = compiler_schedule(g, 2)
    assert plan.stages == (0, 0, 1, 1)
    assert "cut 1 moved from 1 to 2" in stats(plan)["correction"]


def split_pinned_graph():
    """op 0 reads the input; ops 1 and 2 read op 0; op 2 is a model output read by op 3; op 4 reads op 1,
    op 5 reads op 4. libcoral's order [0, 2, 1, 4, 3, 5] puts op 2 (pinned last) second."""
    T = [TensorInfo(i, f"t{i}", "int8", (8,), 8) for i in range(7)]
    ops = (
        Op(0, "ADD", (0,), (1,), 0, 1),
        Op(1, "ADD", (1,), (2,), 0, 1),
        Op(2, "ADD", (1,), (3,), 0, 1),
        Op(3, "ADD", (3,), (4,), 0, 1),
        Op(4, "ADD", (2,), (5,), 0, 1),
        Op(5, "ADD", (5,), (6,), 0, 1),
    )
    return OpGraph("split", ops, tuple(T), (0,), (3, 4, 6))


def test_pinned_ops_moved_to_the_end_when_libcoral_order_has_no_valid_split():
    g = split_pinned_graph()
    assert libcoral_topological_order(g) == [0, 2, 1, 4, 3, 5]
    split = compiler_split(g, 3)
    assert split.order == (0, 1, 4, 2, 3, 5) and "moved to its end" in split.correction
    plan = compiler_schedule(g, 4)
    assert plan.stages == (0, 1, 3, 3, 2, 3)
    assert validate_stage_map(g, plan.stages, 4)
    with pytest.raises(StageMapError, match="cannot split 6 ops into 5 contiguous segments"):
        compiler_schedule(g, 5)


def test_multi_output_op_at_a_boundary_is_a_libcoral_abort_not_ours():
    # op 0 (two outputs) feeds ops 1 and 2, both feed op 3; libcoral cuts [0, 2] | [1, 3] and
    # GetStrategyFromNumOps CHECK-fails on op 0's two outputs leaving segment 0.
    T = [
        TensorInfo(0, "x", "int8", (8,), 8),
        TensorInfo(1, "a", "int8", (8,), 8),
        TensorInfo(2, "b", "int8", (8,), 8),
        TensorInfo(3, "c", "int8", (8,), 8),
        TensorInfo(4, "d", "int8", (8,), 8),
        TensorInfo(5, "y", "int8", (8,), 8),
        TensorInfo(6, "w1", "int8", (1000,), 1000, buffer=1),
        TensorInfo(7, "w2", "int8", (1000,), 1000, buffer=2),
    ]
    ops = (
        Op(0, "SPLIT", (0,), (1, 2), 0, 1),
        Op(1, "CONV_2D", (1, 6), (3,), 1000, 1),
        Op(2, "CONV_2D", (2, 7), (4,), 1000, 1),
        Op(3, "ADD", (3, 4), (5,), 0, 1),
    )
    g = OpGraph("split2", ops, tuple(T), (0,), (5,))
    with pytest.raises(lc.Check, match="Only one output tensor per operator"):
        lc.ParameterCountBasedPartitioner(g).GetStrategy(2)
    plan = compiler_schedule(g, 2)
    assert segments(plan) == [[0, 2], [1, 3]]
    assert stats(plan)["libcoral_would_abort"] is True
    assert "op 0 (SPLIT) has 2 output tensors" in stats(plan)["libcoral_outcome"]


def test_op_reading_only_constants_is_a_libcoral_abort():
    T = [
        TensorInfo(0, "x", "int8", (8,), 8),
        TensorInfo(1, "c", "int8", (8,), 8, buffer=1),
        TensorInfo(2, "a", "int8", (8,), 8),
        TensorInfo(3, "b", "int8", (8,), 8),
        TensorInfo(4, "y", "int8", (8,), 8),
    ]
    ops = (Op(0, "ADD", (0,), (2,), 0, 1), Op(1, "RESHAPE", (1,), (3,), 8, 1), Op(2, "ADD", (2, 3), (4,), 0, 1))
    g = OpGraph("const", ops, tuple(T), (0,), (4,))
    with pytest.raises(lc.Check, match="num_non_weight_tensors"):
        lc.ParameterCountBasedPartitioner(g).GetStrategy(2)
    plan = compiler_schedule(g, 2)
    assert validate_stage_map(g, plan.stages, 2) and "num_non_weight_tensors" in stats(plan)["libcoral_outcome"]


@settings(max_examples=examples(80), deadline=None)
@given(st.one_of(random_dags(), placed_dags()), st.integers(1, 6))
def test_valid_wherever_a_split_exists_and_libcoral_where_it_is_valid(graph, k):
    try:
        plan = compiler_schedule(graph, k)
    except StageMapError:  # then no random topological order has a valid k-split either
        rng = random.Random(0)
        maps = (random_stage_map(graph, k, rng) for _ in range(100))
        assert not any(m is not None and _valid(graph, m, k) for m in maps)
        return
    validate_stage_map(graph, plan.stages, k)
    if k > 1 and not stats(plan)["libcoral_would_abort"] and "correction" not in stats(plan):
        expected = lc.ParameterCountBasedPartitioner(graph).GetStrategy(k)
        assert segments(plan) == [sorted(s) for s in expected]


def _valid(graph, stages, k):
    try:
        validate_stage_map(graph, stages, k)
    except StageMapError:
        return False
    return True


def test_registry():
    assert SCHEDULERS["compiler"] is compiler_schedule
    assert get_scheduler("compiler")(chain_graph([1, 2]), 1, None, unused_option=3).stages == (0, 0)
    with pytest.raises(RespectPassError, match="unknown scheduler 'nope'"):
        get_scheduler("nope")
