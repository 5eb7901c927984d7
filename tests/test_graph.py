import pytest
from conftest import chain_graph, diamond_graph

from tflite_io import Op, OpGraph, TensorInfo


def test_edges_and_adjacency_of_diamond():
    g = diamond_graph()
    assert [(e.src, e.dst, e.tensor, e.nbytes) for e in g.edges] == [
        (0, 1, 1, 20),
        (0, 2, 1, 20),
        (1, 3, 2, 30),
        (2, 3, 3, 40),
    ]
    assert g.preds == ((), (0,), (0,), (1, 2))
    assert g.succs == ((1, 2), (3,), (3,), ())
    assert g.output_ops == frozenset({3})
    assert g.consumers[1] == (1, 2)
    assert g.activation_tensors == frozenset({0, 1, 2, 3, 4})


def test_shared_constant_counts_once_per_op_set():
    g = diamond_graph()
    assert g.param_bytes_of([1, 2]) == 1000
    assert g.param_bytes_of([0, 1, 2, 3]) == 1007
    assert g.total_param_bytes == 1007
    assert g.total_param_elements == 1007
    assert g.param_bytes_of([1]) + g.param_bytes_of([2]) == 2000


def test_graph_is_immutable():
    g = chain_graph([1, 2, 3])
    with pytest.raises(AttributeError):
        g.name = "other"  # type: ignore[misc]


def test_op_reading_a_later_op_output_is_rejected():
    T = (TensorInfo(0, "x", "int8", (1,), 1), TensorInfo(1, "y", "int8", (1,), 1), TensorInfo(2, "z", "int8", (1,), 1))
    ops = (Op(0, "ADD", (0, 2), (1,), 0, 1), Op(1, "ADD", (1,), (2,), 0, 1))
    with pytest.raises(ValueError, match="produced by later op"):
        OpGraph("bad", ops, T, (0,), (2,))


def test_duplicate_input_gives_one_edge():
    T = (TensorInfo(0, "x", "int8", (4,), 4), TensorInfo(1, "y", "int8", (4,), 4), TensorInfo(2, "z", "int8", (4,), 4))
    ops = (Op(0, "RELU", (0,), (1,), 0, 4), Op(1, "MUL", (1, 1), (2,), 0, 4))
    g = OpGraph("sq", ops, T, (0,), (2,))
    assert len(g.edges) == 1
