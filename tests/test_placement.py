"""hardware.placement: which ops edgetpu_compiler v16 maps to the Edge TPU, and the one-subgraph rule.

Every rule test cites the public document it follows. The graphs are built by hand (as in conftest's
``chain_graph``): int8 activations unless said otherwise, constants get their own buffer.
"""

from __future__ import annotations

import math

import pytest
from conftest import chain_graph, diamond_graph

from hardware.placement import (
    EDGETPU_OPS,
    OBSERVED_OPS,
    RESIZE_MAX_SIDE,
    SOFTMAX_MAX_ELEMENTS,
    OpPlacement,
    op_support,
    place_ops,
    placed,
)
from tflite_io import Op, OpGraph, TensorInfo

_SIZE = {"int8": 1, "uint8": 1, "int16": 2, "int32": 4, "int64": 8, "float32": 4, "bool": 1}


class Builder:
    """Tensors and ops in execution order; ``graph()`` makes the OpGraph."""

    def __init__(self) -> None:
        self.tensors: list[TensorInfo] = []
        self.ops: list[Op] = []

    def t(self, *shape: int, dtype: str = "int8", const: bool = False) -> int:
        i = len(self.tensors)
        nbytes = math.prod(max(d, 1) for d in shape) * _SIZE[dtype]
        self.tensors.append(TensorInfo(i, f"t{i}", dtype, tuple(shape), nbytes, buffer=1 + i if const else -1))
        return i

    def op(self, op_type: str, ins: list[int], outs: list[int], custom: str = "") -> int:
        i = len(self.ops)
        self.ops.append(Op(i, op_type, tuple(ins), tuple(outs), 0, 1, custom))
        return i

    def unary(self, op_type: str, x: int, *shape: int, dtype: str = "int8", custom: str = "") -> int:
        """Append ``op_type`` reading ``x`` and writing a new tensor of ``shape``; return that tensor."""
        y = self.t(*shape, dtype=dtype)
        self.op(op_type, [x], [y], custom)
        return y

    def conv(self, x: int, *shape: int) -> int:
        w = self.t(shape[-1], 3, 3, self.tensors[x].shape[-1], const=True)
        b = self.t(shape[-1], dtype="int32", const=True)
        y = self.t(*shape)
        self.op("CONV_2D", [x, w, b], [y])
        return y

    def graph(self, inputs: list[int], outputs: list[int]) -> OpGraph:
        return OpGraph("hand", tuple(self.ops), tuple(self.tensors), tuple(inputs), tuple(outputs))


def support(op_type: str, in_shapes, out_shape, dtype: str = "int8", consts=()) -> str | None:
    """op_support of a single op reading activations of ``in_shapes`` (plus constants) and writing ``out_shape``."""
    b = Builder()
    ins = [b.t(*s, dtype=dtype) for s in in_shapes] + [b.t(*s, dtype=d, const=True) for s, d in consts]
    b.op(op_type, ins, [b.t(*out_shape, dtype=dtype)])
    g = b.graph(ins[: len(in_shapes)], [len(b.tensors) - 1])
    return op_support(g, g.ops[0])


def devices(g: OpGraph) -> list[str]:
    return [p.device for p in place_ops(g)]


# --- single-op rules -------------------------------------------------------------------------------


def test_table_ops_map_on_int8_activations():
    # coral.ai/docs/edgetpu/models-intro/#supported-operations: the "Supported operations" table lists
    # e.g. Add, Logistic, Mul, Relu6, Tanh, Quantize, SpaceToDepth with no known limitation.
    for kind in ("ADD", "LOGISTIC", "MUL", "RELU6", "TANH", "QUANTIZE", "RESHAPE", "TRANSPOSE"):
        assert support(kind, [(1, 8, 8, 16)], (1, 8, 8, 16)) is None, kind
    assert {"CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED", "UNIDIRECTIONAL_SEQUENCE_LSTM"} <= EDGETPU_OPS


def test_ops_outside_the_table_stay_on_the_cpu():
    # coral.ai/docs/edgetpu/models-intro/#model-requirements: "The model uses only the operations
    # supported by the Edge TPU"; LeakyRelu / HardSwish: "leakyRelu operation is not supported"
    # (Coral staff, github.com/google-coral/edgetpu/issues/597; #272).
    for kind in ("ARG_MAX", "LEAKY_RELU", "HARD_SWISH", "GATHER", "BIDIRECTIONAL_SEQUENCE_LSTM"):
        reason = support(kind, [(1, 8, 8, 16)], (1, 8, 8, 16))
        assert reason and "supported-operations table" in reason, kind
        assert kind not in EDGETPU_OPS


def test_custom_ops_never_map():
    # coral.ai/docs/edgetpu/models-intro/#supported-operations lists builtin ops only; custom ops such as
    # PosenetDecoderOp or TFLite_Detection_PostProcess (and an already compiled edgetpu-custom-op) run on the CPU.
    for name in ("PosenetDecoderOp", "TFLite_Detection_PostProcess", "edgetpu-custom-op"):
        b = Builder()
        x = b.t(1, 8)
        y = b.unary("CUSTOM", x, 1, 8, custom=name)
        g = b.graph([x], [y])
        assert op_support(g, g.ops[0]) == f"custom op {name} runs on the CPU (the compiler maps builtin ops only)"


def test_float_activations_do_not_map():
    # coral.ai/docs/edgetpu/models-intro/#model-requirements: "Tensor parameters are quantized (8-bit
    # fixed-point numbers; int8 or uint8)"; compiler log: "Operation is working on an unsupported data type".
    reason = support("ADD", [(1, 8, 8, 16)], (1, 8, 8, 16), dtype="float32")
    assert reason and "float32" in reason and "unsupported data type" in reason
    # int16 activations (16x8 quantization) are not 8-bit either
    assert "int16" in support("ADD", [(1, 8, 8, 16)], (1, 8, 8, 16), dtype="int16")
    assert support("ADD", [(1, 8, 8, 16)], (1, 8, 8, 16), dtype="uint8") is None


def test_int32_bias_is_allowed_float_constants_are_not():
    # coral.ai/docs/edgetpu/models-intro/#model-requirements: "Tensor parameters are quantized"; a
    # full-integer conv keeps int8 weights and an int32 bias (TFLite's int8 scheme), which maps.
    ok = support("CONV_2D", [(1, 8, 8, 16)], (1, 8, 8, 4), consts=[((4, 3, 3, 16), "int8"), ((4,), "int32")])
    assert ok is None
    bad = support("CONV_2D", [(1, 8, 8, 16)], (1, 8, 8, 4), consts=[((4, 3, 3, 16), "float32"), ((4,), "float32")])
    assert bad and "float32 constant" in bad


def test_quantize_maps_only_between_8_bit_types():
    # coral.ai/docs/edgetpu/models-intro/#supported-operations: "Quantize" is in the table; its float input
    # in a float-to-int8 QUANTIZE is not quantized ("Tensor parameters are quantized ... int8 or uint8").
    b = Builder()
    x = b.t(1, 8, 8, 3, dtype="uint8")
    y = b.unary("QUANTIZE", x, 1, 8, 8, 3)
    f = b.t(1, 8, 8, 3, dtype="float32")
    z = b.unary("QUANTIZE", f, 1, 8, 8, 3)
    g = b.graph([x, f], [y, z])
    assert op_support(g, g.ops[0]) is None
    assert "float32 input" in op_support(g, g.ops[1])


def test_dequantize_to_float_stays_on_the_cpu():
    # coral.ai/docs/edgetpu/models-intro/#supported-operations: Dequantize is not in the table, and its
    # output is float ("Tensor parameters are quantized"); google-coral/edgetpu#659 reads the table the same
    # way: "it appears that FLOOR_MOD and DEQUANTIZE are not supported".
    reason = support("DEQUANTIZE", [(1, 10)], (1, 10), dtype="int8")
    assert reason and "DEQUANTIZE is not in" in reason
    b = Builder()
    x = b.t(1, 10)
    y = b.unary("DEQUANTIZE", x, 1, 10, dtype="float32")
    g = b.graph([x], [y])
    assert "float32" in op_support(g, g.ops[0])


def test_dynamic_shapes_do_not_map():
    # coral.ai/docs/edgetpu/models-intro/#model-requirements: "Tensor sizes are constant at
    # compile-time (no dynamic sizes)".
    reason = support("ADD", [(1, -1, 16)], (1, -1, 16))
    assert reason and "dynamic shape" in reason


def test_only_the_three_innermost_dimensions_may_exceed_one():
    # coral.ai/docs/edgetpu/models-intro/#model-requirements: "Tensors are either 1-, 2-, or 3-dimensional.
    # If a tensor has more than 3 dimensions, then only the 3 innermost dimensions may have a size greater than 1".
    assert support("ADD", [(1, 8, 8, 16)], (1, 8, 8, 16)) is None
    assert support("ADD", [(1, 1, 1, 8, 8, 16)], (1, 1, 1, 8, 8, 16)) is None
    reason = support("ADD", [(2, 8, 8, 16)], (2, 8, 8, 16))
    assert reason and "3 innermost dimensions" in reason
    # Pad / Pack / Split "No ... in batch dimension" show up as a batch > 1 activation
    assert "3 innermost" in support("PAD", [(1, 8, 8, 16)], (2, 8, 8, 16), consts=[((4, 2), "int32")])


def test_model_parameters_must_be_constant():
    # coral.ai/docs/edgetpu/models-intro/#model-requirements: "Model parameters (such as bias tensors)
    # are constant at compile-time".
    reason = support("FULLY_CONNECTED", [(1, 16), (10, 16)], (1, 10), consts=[((10,), "int32")])
    assert reason and "weights" in reason and "constant at compile-time" in reason


def test_fully_connected_output_is_one_dimensional():
    # coral.ai/docs/edgetpu/models-intro/#supported-operations, FullyConnected: "Output tensor is one-dimensional".
    w = [((10, 16), "int8"), ((10,), "int32")]
    assert support("FULLY_CONNECTED", [(1, 16)], (1, 10), consts=w) is None
    reason = support("FULLY_CONNECTED", [(1, 28, 16)], (1, 28, 10), consts=w)
    assert reason and "one-dimensional" in reason


def test_concatenation_with_a_constant_needs_exactly_two_inputs():
    # coral.ai/docs/edgetpu/models-intro/#supported-operations, Concatenation: "If any input is a
    # compile-time constant tensor, there must be only 2 inputs".
    assert support("CONCATENATION", [(1, 4, 4, 8)], (1, 4, 4, 16), consts=[((1, 4, 4, 8), "int8")]) is None
    assert support("CONCATENATION", [(1, 4, 4, 8), (1, 4, 4, 8)], (1, 4, 4, 16)) is None
    reason = support("CONCATENATION", [(1, 4, 4, 8), (1, 4, 4, 8)], (1, 4, 4, 24), consts=[((1, 4, 4, 8), "int8")])
    assert reason and "only 2 inputs" in reason


def test_softmax_takes_a_1d_input_of_at_most_16000_elements():
    # coral.ai/docs/edgetpu/models-intro/#supported-operations, Softmax: "Supports only 1-D input tensor
    # with a max of 16,000 elements".
    assert support("SOFTMAX", [(1, 10)], (1, 10)) is None
    assert support("SOFTMAX", [(1, SOFTMAX_MAX_ELEMENTS)], (1, SOFTMAX_MAX_ELEMENTS)) is None
    assert "16,000" in support("SOFTMAX", [(1, SOFTMAX_MAX_ELEMENTS + 1)], (1, SOFTMAX_MAX_ELEMENTS + 1))
    assert "1-D input" in support("SOFTMAX", [(1, 4, 10)], (1, 4, 10))


def test_prelu_alpha_is_one_dimensional():
    # coral.ai/docs/edgetpu/models-intro/#supported-operations, PReLU: "Alpha must be 1-dimensional (only
    # the innermost dimension can be >1 size)".
    assert support("PRELU", [(1, 8, 8, 16)], (1, 8, 8, 16), consts=[((1, 1, 16), "int8")]) is None
    reason = support("PRELU", [(1, 8, 8, 16)], (1, 8, 8, 16), consts=[((8, 8, 16), "int8")])
    assert reason and "Alpha must be 1-dimensional" in reason


def test_mean_z_reduction_needs_a_multiple_of_four():
    # coral.ai/docs/edgetpu/models-intro/#supported-operations, Mean: "If a z-reduction, the z-dimension
    # must be multiple of 4".
    axis = [((1,), "int32")]
    assert support("MEAN", [(1, 7, 7, 6)], (1, 6), consts=axis) is None  # spatial (x/y) reduction
    assert support("MEAN", [(1, 7, 7, 8)], (1, 7, 7), consts=axis) is None  # z = 8
    assert "multiple of 4" in support("MEAN", [(1, 7, 7, 6)], (1, 7, 7, 1), consts=axis)
    assert "multiple of 4" in support("MEAN", [(1, 7, 7, 6)], (1, 7, 7), consts=axis)


@pytest.mark.parametrize("kind", ["RESIZE_BILINEAR", "RESIZE_NEAREST_NEIGHBOR"])
def test_resize_maps_only_small_sizes(kind):
    # coral.ai/docs/edgetpu/models-intro/#supported-operations, ResizeBilinear / ResizeNearestNeighbor:
    # "Depending on input/output size, this operation might not be mapped to the Edge TPU to avoid loss in
    # precision". No number is published; github.com/google-coral/edgetpu/issues/31 (64->128 maps,
    # 256->512 does not), #187 (U-Net maps at 128, not at 256) and #597 ("not mapped to TPU due to their
    # size") give the conservative limit of 128 per side.
    size = [((2,), "int32")]
    assert support(kind, [(1, 64, 64, 32)], (1, RESIZE_MAX_SIDE, RESIZE_MAX_SIDE, 32), consts=size) is None
    assert support(kind, [(1, 2, 2, 32)], (1, 33, 33, 32), consts=size) is None  # not a 1x1 map
    reason = support(kind, [(1, 33, 33, 21)], (1, 513, 513, 21), consts=size)  # DeepLab final upsampling
    assert reason and "1x513x513x21" in reason and "loss in precision" in reason and "#31" in reason
    assert support(kind, [(1, 256, 256, 32)], (1, 64, 64, 32), consts=size)  # large input too


@pytest.mark.parametrize("kind", ["RESIZE_BILINEAR", "RESIZE_NEAREST_NEIGHBOR"])
def test_resize_of_a_1x1_map_does_not_map(kind):
    # Inferred from Google's compiled DeepLab v3 (google-coral/test_data deeplabv3_mnv2_pascal_quant_edgetpu.tflite):
    # its Edge TPU subgraph ends at the 1x1x256 image-pooling tensor and "The remaining 8 TFLite ops (resize,
    # quantize, concat, two 1x1 convs, two resizes, argmax) run on the CPU" (github.com/ricardodeazambuja/LibrEdgeTPU,
    # libredgetpu/postprocess/deeplabv3.py); Google's EdgeTPU-DeepLab-slim broadcasts with TILE instead. Coral's
    # table: "Depending on input/output size, this operation might not be mapped to the Edge TPU".
    size = [((2,), "int32")]
    reason = support(kind, [(1, 1, 1, 256)], (1, 33, 33, 256), consts=size)  # DeepLab's image pooling
    assert reason and "upsamples a 1x1 map" in reason and "deeplabv3_mnv2_pascal_quant_edgetpu" in reason
    assert support(kind, [(1, 1, 1, 16)], (1, 4, 4, 16), consts=size)  # whatever the size
    assert support(kind, [(1, 1, 1, 16)], (1, 1, 1, 16), consts=size) is None  # no upsampling: no broadcast


def test_tile_maps_only_as_a_spatial_broadcast_with_constant_multiples():
    # TILE is not in coral.ai/docs/edgetpu/models-intro/#supported-operations, but Google's compiled
    # EdgeTPU-DeepLab-slim (google-coral/test_data deeplab_mobilenet_edgetpu_slim_cityscapes_quant_edgetpu.tflite)
    # maps the TILE that broadcasts its pooled image features over the feature map (issue 23's check).
    assert "TILE" in OBSERVED_OPS and "TILE" not in EDGETPU_OPS
    multiples = [((4,), "int32")]
    assert support("TILE", [(1, 1, 1, 32)], (1, 8, 8, 32), consts=multiples) is None
    reason = support("TILE", [(1, 1, 1, 32)], (1, 8, 8, 64), consts=multiples)  # tiles the channels
    assert reason and "innermost axis" in reason
    reason = support("TILE", [(1, 1, 1, 32), (4,)], (1, 8, 8, 32))  # multiples computed at run time
    assert reason and "not a constant" in reason
    assert "3 innermost" in support("TILE", [(1, 1, 1, 32)], (2, 8, 8, 32), consts=multiples)
    assert "float32" in support("TILE", [(1, 1, 1, 32)], (1, 8, 8, 32), dtype="float32", consts=multiples)


def lstm_graph(cell_dtype: str = "int16") -> OpGraph:
    """Keras LSTM(20) on 28x28 MNIST rows, full int8: UNIDIRECTIONAL_SEQUENCE_LSTM -> STRIDED_SLICE -> FC -> SOFTMAX."""
    b = Builder()
    x = b.t(1, 28, 28)
    ins = [x] + [b.t(20, 28, const=True) for _ in range(4)] + [b.t(20, 20, const=True) for _ in range(4)]
    ins += [-1, -1, -1] + [b.t(20, dtype="int32", const=True) for _ in range(4)] + [-1, -1]
    ins += [b.t(1, 20), b.t(1, 20, dtype=cell_dtype)] + [-1] * 4  # output state (int8), cell state (int16)
    seq = b.t(1, 28, 20)
    b.op("UNIDIRECTIONAL_SEQUENCE_LSTM", ins, [seq])
    last = b.t(1, 20)
    b.op("STRIDED_SLICE", [seq] + [b.t(3, dtype="int32", const=True) for _ in range(3)], [last])
    logits = b.t(1, 10)
    b.op("FULLY_CONNECTED", [last, b.t(10, 20, const=True), b.t(10, dtype="int32", const=True)], [logits])
    probs = b.unary("SOFTMAX", logits, 1, 10)
    return b.graph([x], [probs])


def test_unidirectional_lstm_maps_with_its_int16_cell_state():
    # coral.ai/docs/edgetpu/models-intro/#supported-operations, LSTM: "Unidirectional LSTM only";
    # "The latest compiler release supports LSTM (Unidirectional only)" (Coral staff, google-coral/edgetpu#156,
    # compiler v16). A full-integer TFLite LSTM keeps its cell state in int16, which is part of the op.
    g = lstm_graph()
    assert [op_support(g, op) for op in g.ops] == [None] * 4
    assert devices(g) == ["tpu"] * 4 and placed(g).host_ops == frozenset()
    assert "float32" in op_support(lstm_graph("float32"), lstm_graph("float32").ops[0])


# --- the whole-model rule ---------------------------------------------------------------------------


def test_everything_after_the_first_unmapped_op_runs_on_the_cpu():
    # coral.ai/docs/edgetpu/models-intro ("Compiling"): "the Edge TPU compiler cannot partition the model more
    # than once, so as soon as an unsupported operation occurs, that operation and everything after it
    # executes on the CPU, even if supported operations occur later".
    b = Builder()
    x = b.t(1, 8, 8, 16)
    y = b.conv(x, 1, 8, 8, 16)
    y = b.unary("LEAKY_RELU", y, 1, 8, 8, 16)
    y = b.conv(y, 1, 8, 8, 16)
    g = b.graph([x], [y])
    placement = place_ops(g)
    assert [p.device for p in placement] == ["tpu", "cpu", "cpu"]
    assert placement[0] == OpPlacement(0, "tpu", "mapped")
    assert "LEAKY_RELU is not in" in placement[1].reason
    assert placement[2].reason.startswith("depends on op 1 (LEAKY_RELU), which runs on the CPU: the compiler builds one")


def test_ops_not_depending_on_the_cpu_tail_still_map():
    # The same rule read along the data flow: the converter may list an SSD's score DEQUANTIZE before the last
    # box-branch ops, which do not depend on it; Google's own SSD pipelines keep every conv head on the Edge TPU
    # (only DEQUANTIZE + TFLite_Detection_PostProcess run on the CPU), so those ops map.
    b = Builder()
    x = b.t(1, 8, 8, 3)
    feat = b.conv(x, 1, 8, 8, 16)
    scores = b.unary("DEQUANTIZE", b.conv(feat, 1, 8, 8, 4), 1, 8, 8, 4, dtype="float32")  # ops 1, 2
    boxes = b.unary("DEQUANTIZE", b.conv(feat, 1, 8, 8, 4), 1, 8, 8, 4, dtype="float32")  # ops 3, 4
    out = b.t(1, 8, 8, 4, dtype="float32")
    b.op("CUSTOM", [scores, boxes], [out], "Post")
    g = b.graph([x], [out])
    assert devices(g) == ["tpu", "tpu", "cpu", "tpu", "cpu", "cpu"]
    assert placed(g).last_stage_ops == frozenset({2, 4, 5})


def deeplab_graph() -> OpGraph:
    """DeepLab v3 (MobileNetV2, 513x513) in miniature: encoder, ASPP with image pooling, final upsampling, ARG_MAX.

    Google's compiled deeplabv3_mnv2_pascal_quant_edgetpu.tflite maps ops 0-3 and 5 (the Edge TPU subgraph outputs
    the 1x1 pooled tensor and the ASPP 1x1-conv tensor) and leaves op 4 (1x1 -> 33x33 resize) and ops 6-10 on the CPU.
    """
    b = Builder()
    x = b.t(1, 513, 513, 3, dtype="uint8")
    q = b.unary("QUANTIZE", x, 1, 513, 513, 3)
    f = b.conv(q, 1, 33, 33, 320)
    pooled = b.unary("AVERAGE_POOL_2D", f, 1, 1, 1, 320)
    pooled = b.conv(pooled, 1, 1, 1, 256)
    up = b.t(1, 33, 33, 256)
    b.op("RESIZE_BILINEAR", [pooled, b.t(2, dtype="int32", const=True)], [up])  # op 4: a 1x1 map, does not
    aspp0 = b.conv(f, 1, 33, 33, 256)
    cat = b.t(1, 33, 33, 512)
    b.op("CONCATENATION", [up, aspp0], [cat])
    logits = b.conv(b.conv(cat, 1, 33, 33, 256), 1, 33, 33, 21)
    big = b.t(1, 513, 513, 21)
    b.op("RESIZE_BILINEAR", [logits, b.t(2, dtype="int32", const=True)], [big])  # op 9: too large
    labels = b.unary("ARG_MAX", big, 1, 513, 513, dtype="int64")
    return b.graph([x], [labels])


def test_deeplab_runs_from_the_image_pooling_resize_on_the_cpu():
    # coral.ai/docs/edgetpu/models-intro (ResizeBilinear row and the one-subgraph rule above); Coral's DeepLab
    # "delegates entirety of decoder to run on CPU" (github.com/xadrianzetx/coral-deeplab README); Google's compiled
    # file leaves "resize, quantize, concat, two 1x1 convs, two resizes, argmax" on the CPU
    # (github.com/ricardodeazambuja/LibrEdgeTPU libredgetpu/postprocess/deeplabv3.py). The ASPP 1x1 conv (op 5)
    # does not depend on the resize and maps.
    g = deeplab_graph()
    placement = place_ops(g)
    assert [p.device for p in placement] == ["tpu"] * 4 + ["cpu", "tpu"] + ["cpu"] * 5
    assert g.ops[4].op_type == "RESIZE_BILINEAR" and "upsamples a 1x1 map" in placement[4].reason
    assert all(placement[v].reason.startswith("depends on op 4 (RESIZE_BILINEAR)") for v in (6, 7, 8))
    assert "513x513" in placement[9].reason and "ARG_MAX is not in" in placement[10].reason


def slim_graph() -> OpGraph:
    """EdgeTPU-DeepLab-slim's image pooling in miniature: MEAN, 1x1 conv, TILE back to the feature map, CONCATENATION,
    projection and logits convs, a small RESIZE_BILINEAR and ARG_MAX."""
    b = Builder()
    x = b.t(1, 64, 64, 3)
    f = b.conv(x, 1, 8, 8, 32)
    pooled = b.t(1, 1, 1, 32)
    b.op("MEAN", [f, b.t(2, dtype="int32", const=True)], [pooled])
    pooled = b.conv(pooled, 1, 1, 1, 16)
    tiled = b.t(1, 8, 8, 16)
    b.op("TILE", [pooled, b.t(4, dtype="int32", const=True)], [tiled])  # op 3
    cat = b.t(1, 8, 8, 48)
    b.op("CONCATENATION", [tiled, f], [cat])
    logits = b.conv(b.conv(cat, 1, 8, 8, 16), 1, 8, 8, 19)
    up = b.t(1, 64, 64, 19)
    b.op("RESIZE_BILINEAR", [logits, b.t(2, dtype="int32", const=True)], [up])
    labels = b.unary("ARG_MAX", up, 1, 64, 64, dtype="int64")
    return b.graph([x], [labels])


def test_deeplab_slim_maps_its_tile_and_what_follows():
    # Google's compiled EdgeTPU-DeepLab-slim maps the TILE of its image-pooling branch and the ops after it (issue
    # 23's check of google-coral/test_data deeplab_mobilenet_edgetpu_slim_cityscapes_quant_edgetpu.tflite); ARG_MAX
    # is not in coral.ai/docs/edgetpu/models-intro/#supported-operations.
    g = slim_graph()
    assert g.ops[3].op_type == "TILE"
    assert devices(g) == ["tpu"] * 8 + ["cpu"]
    assert placed(g).host_ops == frozenset({8})


def test_float_head_runs_on_the_cpu_before_the_tpu_subgraph():
    # coral.ai/docs/edgetpu/models-intro ("Compiling"): the compiler maps one subgraph and leaves the rest on the
    # CPU; a float pre-processing head (MoveNet: CAST, float QUANTIZE) cannot map, so the subgraph starts at
    # the first op that can.
    b = Builder()
    x = b.t(1, 8, 8, 3, dtype="uint8")
    f = b.unary("CAST", x, 1, 8, 8, 3, dtype="float32")
    q = b.unary("QUANTIZE", f, 1, 8, 8, 3)
    y = b.conv(b.conv(q, 1, 8, 8, 16), 1, 8, 8, 16)
    g = b.graph([x], [y])
    assert devices(g) == ["cpu", "cpu", "tpu", "tpu"]
    p = placed(g)
    assert p.host_ops == p.first_stage_ops == frozenset({0, 1})
    assert p.tpu_ops == (2, 3) and p.last_stage_ops == frozenset({3})


def test_posenet_leaves_only_its_decoder_on_the_cpu():
    # coral.ai/docs/edgetpu/models-intro/#supported-operations lists builtin ops only: PoseNet / BodyPix's
    # final PosenetDecoderOp (custom) runs on the CPU, everything before it maps.
    b = Builder()
    x = b.t(1, 33, 33, 3, dtype="uint8")
    feat = b.conv(b.conv(x, 1, 17, 17, 32), 1, 17, 17, 32)
    heat = b.unary("LOGISTIC", b.conv(feat, 1, 17, 17, 17), 1, 17, 17, 17)
    offs = b.conv(feat, 1, 17, 17, 34)
    poses = b.t(1, 10, 17, 2, dtype="float32")
    b.op("CUSTOM", [heat, offs], [poses], "PosenetDecoderOp")
    g = b.graph([x], [poses])
    assert devices(g) == ["tpu"] * 5 + ["cpu"]
    assert placed(g).last_stage_ops == frozenset({5})


def test_ssd_leaves_dequantize_and_postprocess_on_the_cpu():
    # coral.ai/docs/edgetpu/models-intro/#supported-operations: neither Dequantize nor custom ops are in
    # the table; Coral's SSD models run TFLite_Detection_PostProcess on the CPU.
    b = Builder()
    x = b.t(1, 19, 19, 3, dtype="uint8")
    feat = b.conv(x, 1, 19, 19, 32)
    boxes = b.unary("RESHAPE", b.conv(feat, 1, 19, 19, 12), 1, 1083, 4)
    scores = b.unary("LOGISTIC", b.unary("RESHAPE", b.conv(feat, 1, 19, 19, 273), 1, 1083, 91), 1, 1083, 91)
    fb = b.unary("DEQUANTIZE", boxes, 1, 1083, 4, dtype="float32")
    fs = b.unary("DEQUANTIZE", scores, 1, 1083, 91, dtype="float32")
    anchors = b.t(1083, 4, dtype="float32", const=True)
    outs = [b.t(1, 10, 4, dtype="float32"), b.t(1, 10, dtype="float32"), b.t(1, 10, dtype="float32")]
    outs.append(b.t(1, dtype="float32"))
    b.op("CUSTOM", [fb, fs, anchors], outs, "TFLite_Detection_PostProcess")
    g = b.graph([x], outs)
    assert [g.ops[i].label for i, d in enumerate(devices(g)) if d == "cpu"] == [
        "DEQUANTIZE",
        "DEQUANTIZE",
        "CUSTOM(TFLite_Detection_PostProcess)",
    ]


def test_nothing_maps_in_a_float_model():
    # coral.ai/docs/edgetpu/models-intro: "It supports only TensorFlow Lite models that are fully 8-bit quantized".
    b = Builder()
    x = b.t(1, 8, 8, 3, dtype="float32")
    y = b.unary("RELU", b.unary("ADD", x, 1, 8, 8, 3, dtype="float32"), 1, 8, 8, 3, dtype="float32")
    g = b.graph([x], [y])
    placement = place_ops(g)
    assert devices(g) == ["cpu", "cpu"] and all("float32" in p.reason for p in placement)
    assert placed(g).tpu_ops == () and placed(g).first_stage_ops == frozenset({0})  # op 1 makes the output


def test_placed_sets_host_ops_and_keeps_the_graph():
    # The one-subgraph rule (coral.ai/docs/edgetpu/models-intro, "Compiling") as OpGraph.host_ops: CPU ops
    # before the first TPU op go with the first pipeline stage, those after it with the last.
    for g in (chain_graph([10, 20, 30]), diamond_graph()):
        assert devices(g) == ["tpu"] * g.num_ops and placed(g) == g
    g = deeplab_graph()
    p = placed(g)
    tail = frozenset({4, 6, 7, 8, 9, 10})
    assert p.host_ops == tail and p.first_stage_ops == frozenset()
    assert p.last_stage_ops == tail and p.tpu_ops == (0, 1, 2, 3, 5)
    assert (p.ops, p.tensors, p.edges, p.inputs, p.outputs) == (g.ops, g.tensors, g.edges, g.inputs, g.outputs)
    assert placed(p) == p and g.host_ops == frozenset()
