import pytest
from conftest import chain_graph, diamond_graph

from tflite_io import StageMapError, contiguous_stage_map, segment_interfaces, validate_stage_map


def test_valid_non_contiguous_map_interfaces():
    g = diamond_graph()
    # op2 (branch c) in stage 0 with op0, op1 (branch b) in stage 1: not contiguous in op order.
    segs = segment_interfaces(g, (0, 1, 0, 2), 3)
    assert [s.ops for s in segs] == [(0, 2), (1,), (3,)]
    assert segs[0].inputs == (0,) and segs[0].outputs == (1, 3)
    assert segs[1].inputs == (1,) and segs[1].outputs == (2,)
    assert segs[2].inputs == (2, 3) and segs[2].outputs == (4,)
    assert [s.param_bytes for s in segs] == [1007, 1000, 0]


@pytest.mark.parametrize(
    "stages,k,match",
    [
        ((0, 1, 0), 2, "3 entries for 4 ops"),
        ((0, 0, 0, 0), 2, r"stage\(s\) \[1\] are empty"),
        ((0, 0, 2, 1), 3, "precedence violated: op 2"),
        ((0, 1, 1, 1), 3, "empty"),
        ((0, 3, 1, 1), 2, "outside 0..1"),
        ((0, 0, 0, 0), 0, "between 1 and"),
        ((0, 0, 0, 0), 5, "between 1 and"),
    ],
)
def test_invalid_maps_are_rejected_with_the_reason(stages, k, match):
    with pytest.raises(StageMapError, match=match):
        validate_stage_map(diamond_graph(), stages, k)


def test_model_input_must_be_read_by_stage_zero():
    from tflite_io import Op, OpGraph, TensorInfo

    T = tuple(TensorInfo(i, n, "int8", (1,), 1) for i, n in enumerate("xzab"))
    # op0 reads x, op1 reads z (a second model input) and a.
    ops = (Op(0, "RELU", (0,), (2,), 0, 1), Op(1, "ADD", (2, 1), (3,), 0, 1))
    g = OpGraph("two_inputs", ops, T, (0, 1), (3,))
    with pytest.raises(StageMapError, match="model input 'z' is not read by stage 0"):
        validate_stage_map(g, (0, 1), 2)


def test_model_output_producer_is_pinned_to_the_last_stage():
    import dataclasses

    g = dataclasses.replace(diamond_graph(), outputs=(2, 4))  # b is a model output too
    with pytest.raises(StageMapError, match=r"op 1 \(CONV_2D\) produces a model output but is in stage 0"):
        validate_stage_map(g, (0, 0, 1, 1), 2)
    assert validate_stage_map(g, (0, 1, 0, 1), 2) == (0, 1, 0, 1)


def test_tensor_skipping_a_stage_is_output_of_its_producer_only():
    g = chain_graph([1, 1, 1])
    segs = segment_interfaces(g, (0, 1, 2), 3)
    assert [(s.inputs, s.outputs) for s in segs] == [((0,), (1,)), ((1,), (2,)), ((2,), (3,))]


def test_contiguous_stage_map():
    assert contiguous_stage_map([2, 1, 3]) == (0, 0, 1, 2, 2, 2)
    with pytest.raises(StageMapError):
        contiguous_stage_map([2, 0])
