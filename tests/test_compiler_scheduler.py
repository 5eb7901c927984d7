import pytest

from conftest import chain_graph, diamond_graph
from respect_pass.schedulers import SCHEDULERS, get_scheduler
from respect_pass.schedulers.compiler import compiler_schedule, param_balanced_sizes
from tflite_io import RespectPassError, StageMapError, validate_stage_map


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


def test_every_segment_gets_an_op_even_when_one_op_exceeds_the_average():
    # average 1003 // 3 + 1 = 335: libcoral would close segment 0 empty; we give it op 0,
    # then segment 1 takes ops 1-2 (it may run up to op 2, leaving op 3 for the last).
    g = chain_graph([1000, 1, 1, 1])
    assert param_balanced_sizes(g, 3) == [1, 2, 1]


def test_pinned_output_limits_the_split():
    g = diamond_graph()
    plan = compiler_schedule(g, 4)
    assert plan.stages == (0, 1, 2, 3)
    with pytest.raises(StageMapError, match="cannot split 4 ops into 5"):
        compiler_schedule(g, 5)


@pytest.mark.parametrize("k", range(1, 9))
def test_plans_on_the_embedded_model_are_valid(embedded_model, k):
    plan = compiler_schedule(embedded_model.graph, k)
    assert plan.num_stages == k and plan.scheduler == "compiler"
    assert validate_stage_map(embedded_model.graph, plan.stages, k) == plan.stages
    assert list(plan.stages) == sorted(plan.stages)  # contiguous in execution order


def test_registry():
    assert SCHEDULERS["compiler"] is compiler_schedule
    with pytest.raises(RespectPassError, match="unknown scheduler 'nope'"):
        get_scheduler("nope")
