"""tflite_io.synth: synthetic int8 micro-models run in LiteRT, read back with the hand-computed costs,
map to the Edge TPU."""

from __future__ import annotations

import numpy as np
import pytest
from ai_edge_litert import schema_py_generated as schema
from ai_edge_litert.interpreter import Interpreter

from hardware.placement import place_ops
from tflite_io import RespectPassError, read_model
from tflite_io.reader import op_type_name
from tflite_io.synth import (
    Add,
    Concat,
    Conv2D,
    Dense,
    DepthwiseConv2D,
    MaxPool,
    SynthError,
    describe,
    synth_model,
)

# name: (input shape, layers, [(op type, param bytes, MACs)] computed by hand)
CASES = {
    # 16*3*3*8 weights + 4*16 bias bytes; 16*16 positions * 16 filters * 3*3*8
    "conv": ((1, 16, 16, 8), [Conv2D(16)], [("CONV_2D", 1216, 294912)]),
    # VALID, stride 2: (17-3)//2+1 = 8; 8*3*3*4 + 4*8; 8*8*8 * 3*3*4
    "conv_valid_s2": ((1, 17, 17, 4), [Conv2D(8, stride=2, padding="valid", relu=False)], [("CONV_2D", 320, 18432)]),
    # SAME, stride 2 -> 8x8x8; 5*5*8 + 4*8; 8*8*8 * 5*5
    "depthwise": ((1, 16, 16, 8), [DepthwiseConv2D(kernel=5, stride=2)], [("DEPTHWISE_CONV_2D", 232, 12800)]),
    "dense": (
        (1, 64),
        [Dense(32, relu=True), Dense(10)],
        [("FULLY_CONNECTED", 32 * 64 + 4 * 32, 2048), ("FULLY_CONNECTED", 10 * 32 + 4 * 10, 320)],
    ),
    "residual": (
        (1, 12, 12, 8),
        [Conv2D(8), Conv2D(8, relu=False), Add(back=2)],
        [("CONV_2D", 608, 82944), ("CONV_2D", 608, 82944), ("ADD", 0, 12 * 12 * 8)],
    ),
    # inverted residual around the model input: 1x1 expand, 3x3 depthwise, 1x1 project, add the input
    "mobile_block": (
        (1, 16, 16, 8),
        [Conv2D(16, kernel=1), DepthwiseConv2D(), Conv2D(8, kernel=1, relu=False), Add(back=3)],
        [("CONV_2D", 192, 32768), ("DEPTHWISE_CONV_2D", 208, 36864), ("CONV_2D", 160, 32768), ("ADD", 0, 2048)],
    ),
    # 8x8x8 -> pool 4x4x8 -> conv 4x4x8 -> concat 4x4x16 -> reshape (shape: 2 int32) 1x256 -> dense 10
    "cnn_head": (
        (1, 16, 16, 3),
        [Conv2D(8, stride=2), MaxPool(), Conv2D(8), Concat(), Dense(10)],
        [
            ("CONV_2D", 248, 13824),
            ("MAX_POOL_2D", 0, 128),
            ("CONV_2D", 608, 9216),
            ("CONCATENATION", 0, 256),
            ("RESHAPE", 8, 256),
            ("FULLY_CONNECTED", 2600, 2560),
        ],
    ),
    "concat_input": (
        (1, 8, 8, 4),
        [Conv2D(4), Concat(), Conv2D(8, padding="valid")],
        [("CONV_2D", 160, 9216), ("CONCATENATION", 0, 512), ("CONV_2D", 608, 20736)],
    ),
}


@pytest.fixture(scope="module")
def models() -> dict[str, bytes]:
    return {name: synth_model(shape, layers, seed=3, name=name) for name, (shape, layers, _) in CASES.items()}


def _run(data: bytes, x: np.ndarray) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    it = Interpreter(model_content=data, experimental_preserve_all_tensors=True)
    it.allocate_tensors()
    inp, out = it.get_input_details()[0], it.get_output_details()[0]
    assert inp["dtype"] == np.int8 and out["dtype"] == np.int8
    it.set_tensor(inp["index"], x)
    it.invoke()
    acts = {
        d["name"]: it.get_tensor(d["index"])
        for d in it.get_tensor_details()
        if d["dtype"] == np.int8 and not d["name"].endswith("/weights")
    }
    return it.get_tensor(out["index"]).copy(), acts


@pytest.mark.filterwarnings("ignore::UserWarning")
@pytest.mark.parametrize("name", CASES)
def test_runs_in_litert_and_outputs_vary(models, name):
    shape = CASES[name][0]
    rng = np.random.default_rng(7)
    y1, acts = _run(models[name], rng.integers(-128, 128, shape, dtype=np.int8))
    y2, _ = _run(models[name], rng.integers(-128, 128, shape, dtype=np.int8))
    assert not np.array_equal(y1, y2)
    assert len(np.unique(y1)) >= min(16, y1.size // 2), np.unique(y1)
    assert np.mean(y1 == 127) < 0.05  # the output range is not too narrow
    for tensor_name, a in acts.items():
        assert len(np.unique(a)) > 1, f"{tensor_name} is constant"


@pytest.mark.parametrize("name", CASES)
def test_read_model_costs_match_hand_counts(models, name, tmp_path):
    path = tmp_path / f"{name}.tflite"
    path.write_bytes(models[name])
    graph = read_model(path).graph
    assert [(op.op_type, op.param_bytes, op.macs) for op in graph.ops] == CASES[name][2]
    assert graph.tensors[graph.inputs[0]].shape == CASES[name][0]
    assert all(graph.tensors[t].dtype == "int8" for t in graph.inputs + graph.outputs)


@pytest.mark.parametrize("name", CASES)
def test_quantization_follows_the_converter_scheme(models, name, tmp_path):
    path = tmp_path / f"{name}.tflite"
    path.write_bytes(models[name])
    graph = read_model(path).graph
    T = graph.tensors
    for op in graph.ops:
        if op.op_type not in ("CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED"):
            continue
        x, w, b = (T[t] for t in op.inputs)
        axis = 3 if op.op_type == "DEPTHWISE_CONV_2D" else 0
        assert w.dtype == "int8" and w.quantization.axis == axis
        assert len(w.quantization.scale) == w.shape[axis] and set(w.quantization.zero_point) == {0}
        assert b.dtype == "int32" and b.shape == (w.shape[axis],) and set(b.quantization.zero_point) == {0}
        expected = np.float32(x.quantization.scale[0]) * np.asarray(w.quantization.scale, np.float32)
        np.testing.assert_allclose(b.quantization.scale, expected, rtol=1e-6)
    for t in graph.activation_tensors:
        assert T[t].dtype == "int8" and len(T[t].quantization.scale) == 1 and T[t].shape[0] == 1


@pytest.mark.parametrize("name", CASES)
def test_every_op_maps_to_the_edge_tpu(models, name, tmp_path):
    path = tmp_path / f"{name}.tflite"
    path.write_bytes(models[name])
    placements = place_ops(read_model(path).graph)
    assert [(p.device, p.reason) for p in placements] == [("tpu", "mapped")] * len(CASES[name][2])


def test_op_versions_are_the_converters(models, embedded_path):
    """Each op code has the version the TFLite converter wrote for the same int8 op in the embedded MobileNet."""

    def versions(data: bytes) -> dict[str, int]:
        m = schema.ModelT.InitFromPackedBuf(data, 0)
        return {op_type_name(oc): oc.version for oc in m.operatorCodes}

    reference = versions(embedded_path.read_bytes())
    seen = {}
    for data in models.values():
        seen.update(versions(data))
    shared = set(seen) & set(reference)
    assert shared == {"CONV_2D", "DEPTHWISE_CONV_2D", "ADD", "FULLY_CONNECTED"}
    assert {k: seen[k] for k in shared} == {k: reference[k] for k in shared}


def test_same_seed_same_bytes_and_stable_names(models):
    shape, layers, _ = CASES["cnn_head"]
    assert synth_model(shape, layers, seed=3, name="cnn_head") == models["cnn_head"]
    assert synth_model(shape, layers, seed=4) != models["cnn_head"]
    it = Interpreter(model_content=models["cnn_head"])
    names = [d["name"] for d in it.get_tensor_details()]
    assert len(names) == len(set(names))
    assert {
        "input",
        "layer0_conv2d",
        "layer0_conv2d/weights",
        "layer0_conv2d/bias",
        "layer1_maxpool",
        "layer3_concat",
        "layer4_dense/flatten",
        "layer4_dense",
    } <= set(names)
    assert it.get_output_details()[0]["name"] == "layer4_dense"


def test_describe():
    shape, layers, _ = CASES["mobile_block"]
    assert describe(shape, layers) == (
        "1x16x16x8 -> conv 16 1x1/1 same relu -> dwconv 3x3/1 same relu -> conv 8 1x1/1 same -> add(-3)"
    )


@pytest.mark.parametrize(
    "shape, make, match",
    [
        ((1, 8, 8, 4), lambda: [Add()], r"no tensor 1 layer\(s\) back"),
        ((1, 8, 8, 4), lambda: [Conv2D(8), Conv2D(8), Add(back=3)], r"no tensor 3 layer\(s\) back"),
        ((1, 8, 8, 4), lambda: [Conv2D(8), Add()], r"\(1, 8, 8, 8\) but 'input' is \(1, 8, 8, 4\); ADD needs equal"),
        ((1, 8, 8, 4), lambda: [Conv2D(8, stride=2), Concat()], r"CONCATENATION needs equal shapes"),
        ((1, 8, 8, 4), list, "has no layers"),
        ((1, 32), lambda: [Conv2D(8)], r"needs an NHWC input, got shape \(1, 32\)"),
        ((1, 32), lambda: [MaxPool()], "needs an NHWC input"),
        ((1, 8, 8, 4), lambda: [Conv2D(0)], "filters must be a positive integer, got 0"),
        ((1, 8, 8, 4), lambda: [Dense(-3)], "units must be a positive integer, got -3"),
        ((1, 8, 8, 4), lambda: [DepthwiseConv2D(padding="full")], "padding must be 'same' or 'valid', got 'full'"),
        ((1, 4, 4, 4), lambda: [Conv2D(8, kernel=5, padding="valid")], "VALID kernel does not fit the 4x4 input"),
        ((1, 4, 4, 4), lambda: [MaxPool(8)], "window does not fit"),
        ((2, 8, 8, 4), lambda: [Conv2D(8)], r"input shape must be .* got \(2, 8, 8, 4\)"),
        ((1, 8, 8), lambda: [Conv2D(8)], r"got \(1, 8, 8\)"),
        ((1, 8, 8, 4), lambda: ["conv"], "not a Conv2D"),
    ],
)
def test_bad_layer_lists_raise_one_clear_error(shape, make, match):
    with pytest.raises(SynthError, match=match) as info:
        synth_model(shape, make())
    assert isinstance(info.value, ValueError) and isinstance(info.value, RespectPassError)
