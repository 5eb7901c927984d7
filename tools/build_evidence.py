"""Build small test models that reproduce the shapes-of-problem of real Coral models.

Every model is tiny (tens of KB), deterministic (fixed seeds; a rebuild writes
identical bytes with the same TensorFlow / LiteRT versions) and has random
He-normal kernels, so its outputs are not constant. Full-integer int8 models
come from TensorFlow's ``TFLiteConverter`` with a random representative
dataset; custom ops and float post-processing are appended with the flatbuffer
object API (``ai_edge_litert.schema_py_generated``, as in ``tests/crafting.py``).

What each file mimics:

``ssd_head_int8.tflite``
    Google's SSD MobileNet detectors: an int8 backbone with box and class
    heads at two scales (concatenated, LOGISTIC class scores), DEQUANTIZE to
    float, then the ``TFLite_Detection_PostProcess`` custom op (flexbuffer
    options with the standard keys, a constant float anchors tensor [N, 4] as
    third input, four float outputs: boxes, classes, scores, count). LiteRT's
    builtin resolver has a kernel for it, so the whole model runs.
``posenet_like_int8.tflite``
    Coral's PoseNet (``posenet_mobilenet_v1_075_*_quant_decoder``): uint8 image
    in, an int8 conv net with heatmap (17), short-offset (34) and mid-offset
    (64) heads, requantised to uint8 (the converter's QUANTIZE int8->uint8
    ops) and fed straight into the ``PosenetDecoderOp`` custom op, which has
    four float outputs (poses, keypoint scores, pose scores, pose count).
    Coral's kernel (google-coral/edgetpu src/cpp/posenet/posenet_decoder_op.cc)
    takes three inputs, each uint8 or float32 (not int8), and flexbuffer
    options max_detections, score_threshold, stride, nms_radius; Google's
    models feed it the uint8 heads directly. LiteRT has no kernel for it: only
    the part before the custom op runs.
``movenet_like.tflite``
    MoveNet single-pose: uint8 image in, CAST uint8->float32 and a float
    QUANTIZE head, an int8 conv core, DEQUANTIZE, then float keypoint decoding
    (RESHAPE, ARG_MAX, CAST, FLOOR_DIV/FLOOR_MOD, MUL/ADD, REDUCE_MAX, PACK,
    RESHAPE) to a [1, 1, 17, 3] (y, x, score) output as in MoveNet.
``deeplab_like_int8.tflite``
    Coral's DeepLab v3 MobileNetV2: an int8 encoder (output stride 16), an
    ASPP with a 1x1 branch and an image-pooling branch (AVERAGE_POOL_2D over the
    whole feature map, 1x1 conv, a RESIZE_BILINEAR of the 1x1 map back to the
    feature size), concatenation, a decoder to 21 class logits and a final
    RESIZE_BILINEAR to the full 192x192 input resolution followed by ARG_MAX.
    As in Google's compiled model, the CPU tail starts at the 1x1 -> 12x12
    resize (the ASPP 1x1 branch still maps).
``deeplab_v3_aspp_int8.tflite``
    The same image-pooling case with nothing else to leave on the CPU: a
    128x128 input, an encoder to 8x8 (output stride 16), an ASPP with a 1x1
    branch, an atrous 3x3 branch (rate 2) and image pooling (MEAN over y/x, 1x1
    conv, ``resize_bilinear(..., align_corners=True)`` of the 1x1 map to 8x8, as
    DeepLab's ``_resize_bilinear``), concatenation, a projection and a logits
    conv, an align-corners resize to 128x128 (within the size rule) and
    ARG_MAX. Only the 1x1 resize keeps the tail (resize, concatenation, the two
    convs, the final resize) on the CPU with ARG_MAX.
``deeplab_slim_tile_int8.tflite``
    Google's EdgeTPU-DeepLab-slim image pooling: the same encoder, MEAN over
    y/x, a 1x1 conv, then TILE of the 1x1 map to 8x8 (instead of a resize),
    concatenation with a 1x1 branch, projection and logits (19 classes) convs, a
    64x64 bilinear resize and ARG_MAX. The compiler maps that TILE and what
    follows: only ARG_MAX runs on the CPU.
``dynamic_batch_int8.tflite``
    A Keras model converted with the default dynamic batch: the input's
    shape_signature is [-1, 16, 16, 3] while its shape is [1, 16, 16, 3].
``lstm_int8.tflite``
    Coral's Keras LSTM MNIST example: a 28x28 sequence, an LSTM (20 units) and
    a Dense layer, full-integer int8 with a fused UNIDIRECTIONAL_SEQUENCE_LSTM.
    Keras 3's LSTM is not fused by the converter (it becomes a WHILE loop,
    whose int8 conversion crashes TF 2.21), so the LSTM is written as a
    ``tf.function`` with Keras 2's ``standard_lstm`` interface (the
    ``api_implements: lstm_*`` attribute the converter fuses), checked against
    a Keras 3 ``LSTM`` layer with the same weights.
``compiled_edgetpu.tflite``
    What ``edgetpu_compiler`` writes when it maps a whole model: one CUSTOM
    ``edgetpu-custom-op`` (opaque options) between the int8 input and output.

The script prints, and writes to ``README.md`` next to the models, each
model's size, op list (index, op, input/output dtypes and shapes), the ops
expected on the CPU under Coral's rules, and whether it runs in LiteRT.

Usage::

    .venv/bin/python -m tools.build_evidence                 # into tests/data/evidence/
    .venv/bin/python -m tools.build_evidence --out /tmp/ev   # elsewhere
"""

from __future__ import annotations

import argparse
import hashlib
import os
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import flatbuffers
import numpy as np
from ai_edge_litert import schema_py_generated as schema
from flatbuffers import flexbuffers

# The op table and the resize limit are the project's own (hardware.placement), so the README's expected
# placements use the same rules the tests check.
from hardware.placement import EDGETPU_OPS as CORAL_OPS
from hardware.placement import OBSERVED_OPS, RESIZE_MAX_SIDE, resize_limit

# constants 16-byte aligned, as the converter (and the segment writer) lays them out
from tflite_io.submodel import AlignedBufferT as _AlignedBufferT

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_OUT = ROOT / "tests" / "data" / "evidence"

S = schema
OP_NAMES = {v: k for k, v in vars(S.BuiltinOperator).items() if not k.startswith("_")}
TYPE_NAMES = {v: k.lower() for k, v in vars(S.TensorType).items() if not k.startswith("_")}
NP_TYPES = {
    "int8": S.TensorType.INT8,
    "uint8": S.TensorType.UINT8,
    "int32": S.TensorType.INT32,
    "float32": S.TensorType.FLOAT32,
    "int64": S.TensorType.INT64,
}

# --------------------------------------------------------------------------------------------
# Keras / converter helpers
# --------------------------------------------------------------------------------------------


def he_reinit(model, seed: int) -> None:
    """Re-draw every kernel He-normal and every bias N(0, 0.1) from a seeded numpy generator."""
    rng = np.random.default_rng(seed)
    for v in model.weights:
        name = v.path.rsplit("/", 1)[-1] if hasattr(v, "path") else v.name
        shape = tuple(int(d) for d in v.shape)
        if name == "depthwise_kernel":
            fan_in = shape[0] * shape[1]
        elif name.endswith("kernel"):
            fan_in = int(np.prod(shape[:-1]))
        elif name == "bias":
            v.assign(rng.normal(0.0, 0.1, shape).astype("float32"))
            continue
        else:
            continue
        v.assign(rng.normal(0.0, np.sqrt(2.0 / fan_in), shape).astype("float32"))


def centre_outputs(model, names, shape, seed: int, gain: float = 1.0) -> None:
    """Subtract from each named layer's bias its mean output on random inputs (then scale kernel and
    bias by ``gain``), so that a class head's argmax follows the input instead of one dominant
    per-channel offset (random weights otherwise give a constant segmentation / one detected class)."""
    import tensorflow as tf

    probe = np.random.default_rng(seed + 100).uniform(-1.0, 1.0, (4,) + tuple(shape[1:])).astype("float32")
    for name in names:
        layer = model.get_layer(name)
        sub = tf.keras.Model(model.inputs, layer.output)
        key = model.inputs[0].name
        mean = (
            np.concatenate([np.asarray(sub({key: probe[i : i + 1]})) for i in range(len(probe))])
            .reshape(-1, layer.bias.shape[0])
            .mean(axis=0)
        )
        layer.bias.assign((np.asarray(layer.bias) - mean) * gain)
        layer.kernel.assign(np.asarray(layer.kernel) * gain)


def representative(shape, seed: int, samples: int = 8, dtype: str = "float32"):
    """A representative-dataset callable yielding seeded random inputs of ``shape``."""

    def gen():
        rng = np.random.default_rng(seed)
        for _ in range(samples):
            if dtype == "uint8":
                yield [rng.integers(0, 256, shape).astype("uint8")]
            else:
                yield [rng.uniform(-1.0, 1.0, shape).astype("float32")]

    return gen


def convert(converter, rep, input_type=None, output_type=None, builtins: bool = False) -> bytes:
    """Full-integer conversion; ``None`` types leave the converter's default (float I/O)."""
    import tensorflow as tf

    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    converter.representative_dataset = rep
    ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    if builtins:
        ops.append(tf.lite.OpsSet.TFLITE_BUILTINS)
    converter.target_spec.supported_ops = ops
    if input_type is not None:
        converter.inference_input_type = input_type
    if output_type is not None:
        converter.inference_output_type = output_type
    return bytes(converter.convert())


def keras_int8(model, rep, input_type="int8", output_type="int8", builtins=False) -> bytes:
    import tensorflow as tf

    types = {"int8": tf.int8, "uint8": tf.uint8, None: None}
    return convert(tf.lite.TFLiteConverter.from_keras_model(model), rep, types[input_type], types[output_type], builtins)


# --------------------------------------------------------------------------------------------
# Flatbuffer object-API editing
# --------------------------------------------------------------------------------------------


class Editor:
    """Append tensors, op codes and operators to subgraph 0 of a model, then pack it again."""

    def __init__(self, data: bytes | None = None):
        if data is None:
            self.m = S.ModelT()
            self.m.version = 3
            self.m.description = b"MLIR Converted."
            self.m.operatorCodes, self.m.buffers = [], [S.BufferT()]
            sg = S.SubGraphT()
            sg.tensors, sg.operators, sg.inputs, sg.outputs, sg.name = [], [], [], [], b"main"
            self.m.subgraphs = [sg]
        else:
            self.m = S.ModelT.InitFromPackedBuf(data, 0)
        self.sg = self.m.subgraphs[0]

    # -- building blocks
    def opcode(self, builtin: int, custom: bytes | None = None, version: int = 1) -> int:
        for i, oc in enumerate(self.m.operatorCodes):
            code = max(int(oc.builtinCode), int(oc.deprecatedBuiltinCode))
            if code == builtin and (oc.customCode or None) == custom:
                return i
        oc = S.OperatorCodeT()
        oc.builtinCode = builtin
        oc.deprecatedBuiltinCode = min(builtin, S.BuiltinOperator.PLACEHOLDER_FOR_GREATER_OP_CODES)
        oc.customCode = custom
        oc.version = version
        self.m.operatorCodes.append(oc)
        return len(self.m.operatorCodes) - 1

    def tensor(
        self, name: str, shape, dtype: str, data: np.ndarray | None = None, scale: float | None = None, zero_point: int = 0
    ) -> int:
        t = S.TensorT()
        t.name, t.shape, t.type = name.encode(), [int(d) for d in shape], NP_TYPES[dtype]
        t.buffer = 0
        if data is not None:
            b = S.BufferT()
            b.data = np.frombuffer(np.ascontiguousarray(data, dtype=dtype).tobytes(), dtype=np.uint8).copy()
            self.m.buffers.append(b)
            t.buffer = len(self.m.buffers) - 1
        if scale is not None:
            q = S.QuantizationParametersT()
            q.scale, q.zeroPoint = [float(scale)], [int(zero_point)]
            t.quantization = q
        self.sg.tensors.append(t)
        return len(self.sg.tensors) - 1

    def const(self, name: str, values, dtype: str) -> int:
        arr = np.asarray(values, dtype=dtype)
        return self.tensor(name, arr.shape, dtype, data=arr)

    def op(
        self, opcode: int, inputs, outputs, options_type: int = 0, options=None, custom_options: bytes | None = None
    ) -> int:
        o = S.OperatorT()
        o.opcodeIndex, o.inputs, o.outputs = opcode, list(inputs), list(outputs)
        o.builtinOptionsType, o.builtinOptions = options_type, options
        if custom_options is not None:
            o.customOptions = np.frombuffer(bytes(custom_options), dtype=np.uint8).copy()
            o.customOptionsFormat = S.CustomOptionsFormat.FLEXBUFFERS
        self.sg.operators.append(o)
        return len(self.sg.operators) - 1

    def builtin(self, code: int, inputs, outputs, options_type: int = 0, options=None) -> int:
        return self.op(self.opcode(code), inputs, outputs, options_type, options)

    def custom(self, name: str, inputs, outputs, custom_options: bytes) -> int:
        return self.op(self.opcode(S.BuiltinOperator.CUSTOM, name.encode()), inputs, outputs, custom_options=custom_options)

    # -- queries
    def shape(self, t: int) -> list[int]:
        return [int(d) for d in self.sg.tensors[t].shape]

    def dtype(self, t: int) -> str:
        return TYPE_NAMES[self.sg.tensors[t].type]

    def producer(self, t: int) -> int | None:
        return next((i for i, o in enumerate(self.sg.operators) if t in list(o.outputs)), None)

    def set_outputs(self, outputs, names=None) -> None:
        """New subgraph outputs; the serving signature (if any) is rewritten to match."""
        self.sg.outputs = list(outputs)
        for sig in self.m.signatureDefs or []:
            maps = []
            for k, t in enumerate(outputs):
                tm = S.TensorMapT()
                tm.name = (names[k] if names else self.sg.tensors[t].name.decode()).encode()
                tm.tensorIndex = t
                maps.append(tm)
            sig.outputs = maps

    def pack(self) -> bytes:
        self.m.buffers = [_aligned(b) for b in self.m.buffers]
        b = flatbuffers.Builder(1 << 16)
        b.Finish(self.m.Pack(b), file_identifier=b"TFL3")
        return bytes(b.Output())


def _aligned(buf):
    out = _AlignedBufferT()
    out.data, out.offset, out.size = buf.data, buf.offset, buf.size
    return out


def flex(options: dict) -> bytes:
    """A flexbuffer map (what TFLite custom ops read their options from)."""
    return bytes(flexbuffers.Dumps(options))


# --------------------------------------------------------------------------------------------
# The models
# --------------------------------------------------------------------------------------------


@dataclass
class Built:
    name: str
    data: bytes
    mimics: str
    litert: str = ""
    notes: list[str] = field(default_factory=list)


def _layers():
    """TensorFlow and Keras layers, with Keras' name counters reset (tensor names then do not depend
    on which models were built before)."""
    import tensorflow as tf

    tf.keras.backend.clear_session()
    return tf, tf.keras.layers


def _dw_pw(L, x, c, stride=1):
    """MobileNet block: 3x3 depthwise (ReLU6) then 1x1 conv (ReLU6)."""
    x = L.DepthwiseConv2D(3, stride, padding="same", activation="relu6")(x)
    return L.Conv2D(c, 1, activation="relu6")(x)


SSD_CLASSES = 5  # + 1 background column, as in Google's SSD models
SSD_ANCHORS = 3  # per feature-map cell
SSD_MAX_DET = 10


def ssd_anchors(sizes=(8, 4), aspect=(1.0, 2.0, 0.5), scales=(0.25, 0.5)) -> np.ndarray:
    """CenterSize anchors (ycenter, xcenter, h, w) in the order the heads' RESHAPE lays boxes out."""
    rows = []
    for s, base in zip(sizes, scales):
        for i in range(s):
            for j in range(s):
                for ar in aspect:
                    rows.append(((i + 0.5) / s, (j + 0.5) / s, base / np.sqrt(ar), base * np.sqrt(ar)))
    return np.asarray(rows, dtype=np.float32)


def build_ssd(seed: int = 1) -> Built:
    tf, L = _layers()
    tf.keras.utils.set_random_seed(seed)
    inp = tf.keras.Input((64, 64, 3), batch_size=1, name="normalized_input_image_tensor")
    x = L.Conv2D(8, 3, 2, padding="same", activation="relu6")(inp)  # 32x32
    x = _dw_pw(L, x, 16)
    x = _dw_pw(L, x, 24, 2)  # 16x16
    f1 = _dw_pw(L, x, 32, 2)  # 8x8
    f2 = _dw_pw(L, f1, 32, 2)  # 4x4
    boxes: list[Any] = []
    classes: list[Any] = []
    for f in (f1, f2):
        boxes.append(L.Reshape((-1, 4))(L.Conv2D(SSD_ANCHORS * 4, 1)(f)))
        head = L.Conv2D(SSD_ANCHORS * (SSD_CLASSES + 1), 1, name=f"class_head_{len(classes)}")
        classes.append(L.Reshape((-1, SSD_CLASSES + 1))(head(f)))
    box = L.Concatenate(axis=1, name="box_encodings")(boxes)
    cls = L.Activation("sigmoid", name="class_predictions")(L.Concatenate(axis=1)(classes))
    model = tf.keras.Model(inp, [box, cls])
    he_reinit(model, seed)
    centre_outputs(model, ["class_head_0", "class_head_1"], (1, 64, 64, 3), seed, gain=4.0)
    # int8 input, float outputs: the converter appends DEQUANTIZE to each head.
    data = keras_int8(model, representative((1, 64, 64, 3), seed), "int8", None)

    e = Editor(data)
    outs = list(e.sg.outputs)
    box_t = next(t for t in outs if e.shape(t)[-1] == 4)
    cls_t = next(t for t in outs if e.shape(t)[-1] == SSD_CLASSES + 1)
    assert e.dtype(box_t) == e.dtype(cls_t) == "float32", "expected DEQUANTIZE'd float heads"
    anchors = ssd_anchors()
    assert anchors.shape[0] == e.shape(box_t)[1] == e.shape(cls_t)[1]
    a = e.tensor("anchors", anchors.shape, "float32", data=anchors)
    names = [
        "TFLite_Detection_PostProcess",
        "TFLite_Detection_PostProcess:1",
        "TFLite_Detection_PostProcess:2",
        "TFLite_Detection_PostProcess:3",
    ]
    shapes = [(1, SSD_MAX_DET, 4), (1, SSD_MAX_DET), (1, SSD_MAX_DET), (1,)]
    new = [e.tensor(n, s, "float32") for n, s in zip(names, shapes)]
    e.custom(
        "TFLite_Detection_PostProcess",
        [box_t, cls_t, a],
        new,
        flex(
            {
                "max_detections": SSD_MAX_DET,
                "max_classes_per_detection": 1,
                "detections_per_class": 100,
                "use_regular_nms": False,
                "nms_score_threshold": 1e-8,
                "nms_iou_threshold": 0.6,
                "num_classes": SSD_CLASSES,
                "y_scale": 10.0,
                "x_scale": 10.0,
                "h_scale": 5.0,
                "w_scale": 5.0,
            }
        ),
    )
    e.set_outputs(new, ["detection_boxes", "detection_classes", "detection_scores", "num_detections"])
    return Built("ssd_head_int8.tflite", e.pack(), "SSD MobileNet + TFLite_Detection_PostProcess")


POSE_KEYPOINTS, POSE_EDGES, POSE_STRIDE, POSE_MAX = 17, 16, 8, 10


def build_posenet(seed: int = 2) -> Built:
    tf, L = _layers()
    tf.keras.utils.set_random_seed(seed)
    inp = tf.keras.Input((64, 64, 3), batch_size=1, name="sub_2")
    x = L.Conv2D(8, 3, 2, padding="same", activation="relu6")(inp)  # 32x32
    x = _dw_pw(L, x, 16)
    x = _dw_pw(L, x, 24, 2)  # 16x16
    x = _dw_pw(L, x, 32, 2)  # 8x8 (stride 8)
    x = _dw_pw(L, x, 32)
    heat = L.Conv2D(POSE_KEYPOINTS, 1, name="heatmap")(x)
    short = L.Conv2D(2 * POSE_KEYPOINTS, 1, name="offset_2")(x)
    mid = L.Conv2D(2 * 2 * POSE_EDGES, 1, name="displacement_fwd_2")(x)
    model = tf.keras.Model(inp, [heat, short, mid])
    he_reinit(model, seed)
    # uint8 in / uint8 out, as Google's PoseNet: QUANTIZE uint8->int8 in front, int8->uint8 at the heads.
    data = keras_int8(model, representative((1, 64, 64, 3), seed), "uint8", "uint8")

    e = Editor(data)
    by_depth = {e.shape(t)[-1]: t for t in e.sg.outputs}
    ins = [by_depth[POSE_KEYPOINTS], by_depth[2 * POSE_KEYPOINTS], by_depth[4 * POSE_EDGES]]
    assert all(e.dtype(t) == "uint8" for t in ins)
    names = ["poses", "poses:1", "poses:2", "poses:3"]
    shapes = [(1, POSE_MAX, POSE_KEYPOINTS, 2), (1, POSE_MAX, POSE_KEYPOINTS), (1, POSE_MAX), (1,)]
    new = [e.tensor(n, s, "float32") for n, s in zip(names, shapes)]
    e.custom(
        "PosenetDecoderOp",
        ins,
        new,
        flex(
            {
                "max_detections": POSE_MAX,
                "score_threshold": 0.2,
                "stride": POSE_STRIDE,
                "nms_radius": 10.0,
            }
        ),
    )
    e.set_outputs(new, ["poses", "keypoint_scores", "pose_scores", "num_poses"])
    return Built("posenet_like_int8.tflite", e.pack(), "Coral PoseNet + PosenetDecoderOp")


MOVENET_SIZE, MOVENET_STRIDE = 48, 4


def build_movenet(seed: int = 3) -> Built:
    tf, L = _layers()
    import keras

    tf.keras.utils.set_random_seed(seed)
    inp = tf.keras.Input((MOVENET_SIZE, MOVENET_SIZE, 3), batch_size=1, dtype="uint8", name="input")
    x = keras.ops.cast(inp, "float32")
    x = L.Rescaling(1 / 127.5, offset=-1.0)(x)
    x = L.Conv2D(16, 3, 2, padding="same", activation="relu6")(x)  # 24x24
    x = _dw_pw(L, x, 24)
    x = _dw_pw(L, x, 32, 2)  # 12x12
    x = _dw_pw(L, x, 32)
    heat = L.Conv2D(POSE_KEYPOINTS, 1, activation="sigmoid", name="heatmaps")(x)
    model = tf.keras.Model(inp, heat)
    he_reinit(model, seed)
    # uint8 model input (kept: the converter only rewrites float inputs), float output -> DEQUANTIZE.
    data = keras_int8(
        model, representative((1, MOVENET_SIZE, MOVENET_SIZE, 3), seed, dtype="uint8"), None, None, builtins=True
    )

    e = Editor(data)
    (hm,) = e.sg.outputs
    assert e.dtype(hm) == "float32"
    _, h, w, k = e.shape(hm)
    BO, BOp = S.BuiltinOperator, S.BuiltinOptions

    def t(name, shape, dtype="float32"):
        return e.tensor(f"decode/{name}", shape, dtype)

    flat = t("flat", (1, h * w, k))
    ro = S.ReshapeOptionsT()
    ro.newShape = [1, h * w, k]
    e.builtin(BO.RESHAPE, [hm, e.const("decode/flat_shape", [1, h * w, k], "int32")], [flat], BOp.ReshapeOptions, ro)
    idx = t("argmax", (1, k), "int32")
    am = S.ArgMaxOptionsT()
    am.outputType = S.TensorType.INT32
    e.builtin(BO.ARG_MAX, [flat, e.const("decode/axis", [1], "int32")], [idx], BOp.ArgMaxOptions, am)
    idxf = t("argmax_f", (1, k))
    co = S.CastOptionsT()
    co.inDataType, co.outDataType = S.TensorType.INT32, S.TensorType.FLOAT32
    e.builtin(BO.CAST, [idx], [idxf], BOp.CastOptions, co)
    width = e.const("decode/width", [float(w)], "float32")
    row, col = t("row", (1, k)), t("col", (1, k))
    e.builtin(BO.FLOOR_DIV, [idxf, width], [row], BOp.FloorDivOptions, S.FloorDivOptionsT())
    e.builtin(BO.FLOOR_MOD, [idxf, width], [col], BOp.FloorModOptions, S.FloorModOptionsT())
    half = e.const("decode/half", [0.5], "float32")
    coords = []
    for name, q, n in (("y", row, h), ("x", col, w)):
        centred, norm = t(f"{name}_centred", (1, k)), t(name, (1, k))
        e.builtin(BO.ADD, [q, half], [centred], BOp.AddOptions, S.AddOptionsT())
        e.builtin(
            BO.MUL, [centred, e.const(f"decode/inv_{name}", [1.0 / n], "float32")], [norm], BOp.MulOptions, S.MulOptionsT()
        )
        coords.append(norm)
    score = t("score", (1, k))
    rm = S.ReducerOptionsT()
    rm.keepDims = False
    e.builtin(BO.REDUCE_MAX, [flat, e.const("decode/axis_max", [1], "int32")], [score], BOp.ReducerOptions, rm)
    packed = t("packed", (1, k, 3))
    po = S.PackOptionsT()
    po.valuesCount, po.axis = 3, 2
    e.builtin(BO.PACK, coords + [score], [packed], BOp.PackOptions, po)
    out = t("output_0", (1, 1, k, 3))
    ro2 = S.ReshapeOptionsT()
    ro2.newShape = [1, 1, k, 3]
    e.builtin(BO.RESHAPE, [packed, e.const("decode/out_shape", [1, 1, k, 3], "int32")], [out], BOp.ReshapeOptions, ro2)
    e.set_outputs([out], ["output_0"])
    return Built("movenet_like.tflite", e.pack(), "MoveNet single-pose (uint8 in, float decoding tail)")


DEEPLAB_SIZE, DEEPLAB_CLASSES = 192, 21


def build_deeplab(seed: int = 4) -> Built:
    tf, L = _layers()
    tf.keras.utils.set_random_seed(seed)
    inp = tf.keras.Input((DEEPLAB_SIZE, DEEPLAB_SIZE, 3), batch_size=1, name="ImageTensor")
    x = L.Conv2D(16, 3, 2, padding="same", activation="relu6")(inp)  # 96
    x = _dw_pw(L, x, 24, 2)  # 48
    x = _dw_pw(L, x, 32, 2)  # 24
    x = _dw_pw(L, x, 32, 2)  # 12 (output stride 16)
    fs = DEEPLAB_SIZE // 16
    b0 = L.Conv2D(24, 1, activation="relu")(x)
    b1 = L.AveragePooling2D(fs)(x)  # image pooling: 1x1
    b1 = L.Conv2D(24, 1, activation="relu")(b1)
    b1 = L.Resizing(fs, fs, interpolation="bilinear")(b1)  # 1x1 -> 12x12 (maps)
    x = L.Concatenate()([b1, b0])
    x = L.Conv2D(32, 1, activation="relu")(x)
    logits = L.Conv2D(DEEPLAB_CLASSES, 1, name="logits")(x)
    up = L.Resizing(DEEPLAB_SIZE, DEEPLAB_SIZE, interpolation="bilinear")(logits)  # 12x12 -> 192x192 (CPU)
    # tf.argmax (int64, as DeepLab's export): keras.ops.argmax adds NaN handling (tf.BitwiseAnd, a flex op).
    seg = L.Lambda(lambda t: tf.argmax(t, axis=-1), output_shape=(DEEPLAB_SIZE, DEEPLAB_SIZE), name="ArgMax")(up)
    model = tf.keras.Model(inp, seg)
    he_reinit(model, seed)
    centre_outputs(model, ["logits"], (1, DEEPLAB_SIZE, DEEPLAB_SIZE, 3), seed)
    data = keras_int8(model, representative((1, DEEPLAB_SIZE, DEEPLAB_SIZE, 3), seed), "int8", None)
    return Built(
        "deeplab_like_int8.tflite",
        data,
        "Coral DeepLab v3 MobileNetV2 (1x1 image-pooling resize, big final resize, ARG_MAX)",
    )


ASPP_SIZE, ASPP_GRID = 128, 8  # input side, feature map side at output stride 16


def _resize_align_corners(tf, L, x, size: int):
    """DeepLab's ``_resize_bilinear``: ``tf.compat.v1.image.resize_bilinear(x, size, align_corners=True)``."""
    return L.Lambda(
        lambda t: tf.compat.v1.image.resize_bilinear(t, (size, size), align_corners=True),
        output_shape=(size, size, int(x.shape[-1])),
    )(x)


def _os16_encoder(L, inp):
    """A small MobileNet-style encoder from ASPP_SIZE to ASPP_GRID (output stride 16), 32 channels."""
    x = L.Conv2D(16, 3, 2, padding="same", activation="relu6")(inp)  # 64
    x = _dw_pw(L, x, 24, 2)  # 32
    x = _dw_pw(L, x, 32, 2)  # 16
    return _dw_pw(L, x, 32, 2)  # 8


def _argmax(tf, L, x):
    """tf.argmax over the classes (int64, as DeepLab's export)."""
    side = int(x.shape[1])
    return L.Lambda(lambda t: tf.argmax(t, axis=-1), output_shape=(side, side), name="ArgMax")(x)


def build_deeplab_aspp(seed: int = 8) -> Built:
    tf, L = _layers()
    tf.keras.utils.set_random_seed(seed)
    inp = tf.keras.Input((ASPP_SIZE, ASPP_SIZE, 3), batch_size=1, name="ImageTensor")
    x = _os16_encoder(L, inp)
    b0 = L.Conv2D(24, 1, activation="relu", name="aspp0")(x)
    b1 = L.Conv2D(24, 3, padding="same", dilation_rate=2, activation="relu", name="aspp1")(x)
    pool = L.GlobalAveragePooling2D(keepdims=True)(x)  # MEAN over y/x: 1x1
    pool = L.Conv2D(24, 1, activation="relu", name="image_pooling")(pool)
    pool = _resize_align_corners(tf, L, pool, ASPP_GRID)  # 1x1 -> 8x8 (CPU)
    x = L.Concatenate()([pool, b0, b1])
    x = L.Conv2D(32, 1, activation="relu", name="concat_projection")(x)
    logits = L.Conv2D(DEEPLAB_CLASSES, 1, name="logits")(x)
    up = _resize_align_corners(tf, L, logits, ASPP_SIZE)  # 8x8 -> 128x128 (within the size rule)
    model = tf.keras.Model(inp, _argmax(tf, L, up))
    he_reinit(model, seed)
    centre_outputs(model, ["logits"], (1, ASPP_SIZE, ASPP_SIZE, 3), seed)
    data = keras_int8(model, representative((1, ASPP_SIZE, ASPP_SIZE, 3), seed), "int8", None)
    return Built("deeplab_v3_aspp_int8.tflite", data, "DeepLab v3 ASPP whose only CPU cause is the 1x1 image-pooling resize")


SLIM_CLASSES = 19  # Cityscapes, as Google's EdgeTPU-DeepLab-slim


def build_deeplab_slim(seed: int = 9) -> Built:
    tf, L = _layers()
    tf.keras.utils.set_random_seed(seed)
    inp = tf.keras.Input((ASPP_SIZE, ASPP_SIZE, 3), batch_size=1, name="ImageTensor")
    x = _os16_encoder(L, inp)
    b0 = L.Conv2D(24, 1, activation="relu", name="aspp0")(x)
    pool = L.GlobalAveragePooling2D(keepdims=True)(x)  # MEAN over y/x: 1x1
    pool = L.Conv2D(24, 1, activation="relu", name="image_pooling")(pool)
    grid = (1, ASPP_GRID, ASPP_GRID, 1)
    pool = L.Lambda(lambda t: tf.tile(t, grid), output_shape=(ASPP_GRID, ASPP_GRID, 24), name="Tile")(pool)  # maps
    x = L.Concatenate()([pool, b0])
    x = L.Conv2D(32, 1, activation="relu", name="concat_projection")(x)
    logits = L.Conv2D(SLIM_CLASSES, 1, name="logits")(x)
    up = L.Resizing(ASPP_SIZE // 2, ASPP_SIZE // 2, interpolation="bilinear")(logits)  # 8x8 -> 64x64 (maps)
    model = tf.keras.Model(inp, _argmax(tf, L, up))
    he_reinit(model, seed)
    centre_outputs(model, ["logits"], (1, ASPP_SIZE, ASPP_SIZE, 3), seed)
    data = keras_int8(model, representative((1, ASPP_SIZE, ASPP_SIZE, 3), seed), "int8", None)
    return Built("deeplab_slim_tile_int8.tflite", data, "EdgeTPU-DeepLab-slim image pooling broadcast with TILE")


def build_dynamic_batch(seed: int = 5) -> Built:
    tf, L = _layers()
    tf.keras.utils.set_random_seed(seed)
    inp = tf.keras.Input((16, 16, 3), name="input")  # batch left dynamic
    x = L.Conv2D(8, 3, 2, padding="same", activation="relu6")(inp)
    x = _dw_pw(L, x, 16)
    x = L.GlobalAveragePooling2D()(x)
    out = L.Dense(10)(x)
    model = tf.keras.Model(inp, out)
    he_reinit(model, seed)
    data = keras_int8(model, representative((1, 16, 16, 3), seed), "int8", "int8")
    sig = Editor(data)
    t = sig.sg.tensors[sig.sg.inputs[0]]
    assert list(t.shapeSignature) == [-1, 16, 16, 3] and list(t.shape) == [1, 16, 16, 3], (t.shape, t.shapeSignature)
    return Built("dynamic_batch_int8.tflite", data, "Keras model with the default dynamic batch")


LSTM_T, LSTM_D, LSTM_U, LSTM_C = 28, 28, 20, 10


def build_lstm(seed: int = 6) -> Built:
    tf, L = _layers()
    tf.keras.utils.set_random_seed(seed)
    # A Keras 3 LSTM + Dense, He-initialised; its weights drive the fused function below.
    inp = tf.keras.Input((LSTM_T, LSTM_D), batch_size=1)
    ref = tf.keras.Model(inp, L.Dense(LSTM_C)(L.LSTM(LSTM_U)(inp)))
    he_reinit(ref, seed)
    kernel, rkernel, bias, dense_w, dense_b = [np.asarray(v) for v in ref.weights]

    @tf.function(
        autograph=False,
        experimental_attributes={
            "api_implements": "lstm_8f3b2a6e-4c1d-4e7a-9b5f-0d2c6a1e7f30",
            "api_preferred_device": "CPU",
            "time_major": False,
            "go_backwards": False,
        },
    )
    def standard_lstm(inputs, init_h, init_c, kernel, recurrent_kernel, bias):
        """Keras 2's standard_lstm contract: 6 tensor args (weights as tensors, not variables: passing
        resource variables crashes the converter's CheckFusableKerasLstm), 5 outputs."""
        h, c, outs = init_h, init_c, []
        for step in range(LSTM_T):
            z = tf.matmul(inputs[:, step, :], kernel) + tf.matmul(h, recurrent_kernel) + bias
            i, f, g, o = tf.split(z, 4, axis=1)
            c = tf.sigmoid(f) * c + tf.sigmoid(i) * tf.tanh(g)
            h = tf.sigmoid(o) * tf.tanh(c)
            outs.append(h)
        return h, tf.stack(outs, axis=1), h, c, tf.constant(1.0)

    module_base: Any = tf.Module  # tf comes from _layers(), a variable mypy cannot use as a base class

    class Net(module_base):
        def __init__(self):
            super().__init__()
            self.w = [tf.Variable(a) for a in (kernel, rkernel, bias, dense_w, dense_b)]

        @tf.function(input_signature=[tf.TensorSpec([1, LSTM_T, LSTM_D], tf.float32)])
        def serve(self, x):
            zeros = tf.zeros([1, LSTM_U])
            k, rk, b, w, wb = (tf.convert_to_tensor(v) for v in self.w)
            last, _, _, _, _ = standard_lstm(x, zeros, zeros, k, rk, b)
            return tf.matmul(last, w) + wb

    net = Net()
    probe = np.random.default_rng(seed).uniform(-1, 1, (1, LSTM_T, LSTM_D)).astype("float32")
    err = float(np.max(np.abs(net.serve(probe).numpy() - ref(probe).numpy())))
    assert err < 1e-4, f"fused LSTM function disagrees with keras.layers.LSTM ({err})"
    fn = net.serve.get_concrete_function()
    data = convert(
        tf.lite.TFLiteConverter.from_concrete_functions([fn], net),
        representative((1, LSTM_T, LSTM_D), seed),
        tf.int8,
        tf.int8,
    )
    b = Built("lstm_int8.tflite", data, "Coral Keras LSTM MNIST example (UNIDIRECTIONAL_SEQUENCE_LSTM)")
    b.notes.append(f"float tf.function matches keras.layers.LSTM to {err:.1e}")
    return b


def build_compiled(seed: int = 7) -> Built:
    e = Editor()
    x = e.tensor("serving_default_input:0", (1, 8, 8, 3), "int8", scale=1 / 128, zero_point=0)
    y = e.tensor("StatefulPartitionedCall:0", (1, 10), "int8", scale=0.05, zero_point=-3)
    blob = np.random.default_rng(seed).integers(0, 256, 64).astype(np.uint8).tobytes()
    e.custom("edgetpu-custom-op", [x], [y], blob)
    e.sg.operators[-1].customOptionsFormat = S.CustomOptionsFormat.FLEXBUFFERS
    e.sg.inputs, e.sg.outputs = [x], [y]
    return Built("compiled_edgetpu.tflite", e.pack(), "edgetpu_compiler output (one edgetpu-custom-op)")


BUILDERS = (
    build_ssd,
    build_posenet,
    build_movenet,
    build_deeplab,
    build_dynamic_batch,
    build_lstm,
    build_compiled,
    build_deeplab_aspp,
    build_deeplab_slim,
)
FILES = (
    "ssd_head_int8.tflite",
    "posenet_like_int8.tflite",
    "movenet_like.tflite",
    "deeplab_like_int8.tflite",
    "dynamic_batch_int8.tflite",
    "lstm_int8.tflite",
    "compiled_edgetpu.tflite",
    "deeplab_v3_aspp_int8.tflite",
    "deeplab_slim_tile_int8.tflite",
)


# --------------------------------------------------------------------------------------------
# Inspection: op table, expected CPU placement, LiteRT run
# --------------------------------------------------------------------------------------------


@dataclass
class OpRow:
    index: int
    kind: str  # builtin name or "CUSTOM:<code>"
    ins: list[str]
    outs: list[str]
    problem: str | None  # why it cannot map on its own (None: mappable)


def _is_const(m, t) -> bool:
    buf = m.buffers[t.buffer] if 0 < t.buffer < len(m.buffers) else None
    return buf is not None and buf.data is not None and len(buf.data) > 0


def op_rows(data: bytes) -> list[OpRow]:
    m = S.ModelT.InitFromPackedBuf(data, 0)
    sg = m.subgraphs[0]
    rows = []

    def desc(t):
        if t < 0:
            return "-"
        tt = sg.tensors[t]
        shape = [int(d) for d in (tt.shapeSignature if tt.shapeSignature is not None else tt.shape)]
        return f"{TYPE_NAMES[tt.type]}{shape}" + ("c" if _is_const(m, tt) else "")

    for i, op in enumerate(sg.operators):
        oc = m.operatorCodes[op.opcodeIndex]
        name = OP_NAMES[max(int(oc.builtinCode), int(oc.deprecatedBuiltinCode))]
        kind = f"CUSTOM:{oc.customCode.decode()}" if name == "CUSTOM" else name
        acts = [
            sg.tensors[t]
            for t in list(op.inputs) + list(op.outputs)
            if t >= 0 and not _is_const(m, sg.tensors[t]) and not sg.tensors[t].isVariable
        ]
        problem = None
        if name == "CUSTOM":
            problem = "custom op"
        elif name not in CORAL_OPS and name not in OBSERVED_OPS:
            problem = "not in Coral's op table"
        elif any(TYPE_NAMES[t.type] not in ("int8", "uint8") for t in acts):
            problem = "non-8-bit activation"
        elif name.startswith("RESIZE_"):
            src, dst = (tuple(int(d) for d in sg.tensors[t].shape) for t in (op.inputs[0], op.outputs[0]))
            why = resize_limit(name, src, dst)
            if why:
                problem = "resize of a 1x1 map" if "1x1 map" in why else f"resize with a side > {RESIZE_MAX_SIDE}"
        rows.append(OpRow(i, kind, [desc(t) for t in op.inputs], [desc(t) for t in op.outputs], problem))
    return rows


def expected_cpu(rows: list[OpRow]) -> tuple[list[int], list[int]]:
    """(strict, with_head): strict = every op from the first unmappable op on (Coral's one-subgraph
    rule read literally); with_head = unmappable ops ahead of the first mappable op stay on the CPU in
    front of the TPU subgraph, which then runs up to the next unmappable op."""
    n = len(rows)
    first_bad = next((r.index for r in rows if r.problem), n)
    strict = list(range(first_bad, n))
    start = next((r.index for r in rows if not r.problem), n)
    stop = next((i for i in range(start, n) if rows[i].problem), n)
    with_head = list(range(start)) + list(range(stop, n))
    return strict, with_head


_UNRESOLVED = re.compile(r"unresolved custom op: (.+?)\.(?:\s|$)")


def run_litert(data: bytes, seed: int = 0) -> tuple[bool, str]:
    """Allocate and invoke on random input; (ran, one-line summary)."""
    from ai_edge_litert.interpreter import Interpreter

    try:
        it = Interpreter(model_content=data)
        it.allocate_tensors()
    except (RuntimeError, ValueError) as exc:
        msg = " ".join(str(exc).split())
        hit = _UNRESOLVED.search(msg)
        return False, f"allocate_tensors fails: unresolved custom op {hit.group(1)}" if hit else msg[:160]
    rng = np.random.default_rng(seed)
    for d in it.get_input_details():
        info = np.iinfo(d["dtype"]) if np.issubdtype(d["dtype"], np.integer) else None
        x = rng.integers(info.min, info.max + 1, d["shape"]) if info else rng.uniform(-1, 1, d["shape"])
        it.set_tensor(d["index"], x.astype(d["dtype"]))
    it.invoke()
    outs = []
    for d in it.get_output_details():
        y = it.get_tensor(d["index"])
        outs.append(f"{np.dtype(y.dtype).name}{list(y.shape)} ({len(np.unique(y))} distinct)")
    return True, "invoke ok: " + ", ".join(outs)


def runnable_prefix(data: bytes) -> bytes:
    """The model without its custom ops that LiteRT has no kernel for (and what depends on them); the
    tensors the removed ops read become the outputs."""
    e = Editor(data)
    ops = e.sg.operators
    dropped: set[int] = set()
    for i, op in enumerate(ops):
        oc = e.m.operatorCodes[op.opcodeIndex]
        produced_by_dropped = {t for j in dropped for t in ops[j].outputs}
        if oc.customCode in (b"PosenetDecoderOp", b"edgetpu-custom-op") or produced_by_dropped & set(op.inputs):
            dropped.add(i)
    kept_out = {t for i, op in enumerate(ops) if i not in dropped for t in op.outputs}
    new_outputs = [t for j in sorted(dropped) for t in ops[j].inputs if t in kept_out]
    new_outputs += [t for t in e.sg.outputs if t in kept_out]
    e.sg.operators = [op for i, op in enumerate(ops) if i not in dropped]
    e.sg.outputs = list(dict.fromkeys(new_outputs))
    e.m.signatureDefs = []
    return e.pack()


def check(b: Built) -> None:
    """Unpack, run in LiteRT (or run the part before an unresolved custom op); record the outcome."""
    S.ModelT.InitFromPackedBuf(b.data, 0)  # unpacks
    ran, summary = run_litert(b.data)
    b.litert = ("yes - " if ran else "no - ") + summary
    if not ran and "unresolved custom op" in summary:
        pre = runnable_prefix(b.data)
        if S.ModelT.InitFromPackedBuf(pre, 0).subgraphs[0].operators:
            ran2, summary2 = run_litert(pre)
            b.notes.append(f"part before the custom op: {'runs' if ran2 else 'fails'} ({summary2})")


def _project_placement(path: Path) -> str:
    """Cross-check with the project's own placement rules (hardware.placement), when importable."""
    try:
        from hardware.placement import place_ops
        from tflite_io import read_model

        g = read_model(path, fix_batch=True).graph
        cpu = [p.index for p in place_ops(g) if p.device == "cpu"]
        return _ranges(cpu)
    except Exception as exc:  # noqa: BLE001 - informational only
        return f"n/a: read_model raises {type(exc).__name__}"


def _ranges(idx: list[int]) -> str:
    if not idx:
        return "none"
    out: list[str] = []
    start: int | None = idx[0]
    nexts: list[int | None] = [*idx[1:], None]
    for a, b in zip(idx, nexts):
        if b != a + 1:
            out.append(f"{start}" if start == a else f"{start}-{a}")
            start = b
    return ", ".join(out)


def report(built: list[Built], out: Path) -> str:
    lines = [
        "# Evidence models",
        "",
        "Small deterministic models that reproduce real Coral model shapes-of-problem, built by",
        "`tools/build_evidence.py` (see its docstring for what each mimics). Rebuild with:",
        "",
        "    .venv/bin/python -m tools.build_evidence",
        "",
        '"CPU (strict)": every op from the first unmappable op on (Coral: "as soon as an unsupported',
        'operation occurs, that operation and everything after it executes on the CPU"); custom ops,',
        "ops outside Coral's op table (TILE aside: Google's compiled EdgeTPU-DeepLab-slim maps it) and ops",
        f"with non-8-bit activations never map; a RESIZE_* with a side over {RESIZE_MAX_SIDE} (DeepLab's final",
        "upsampling) or of a 1x1 map (DeepLab's image pooling, on the CPU in Google's compiled DeepLab v3)",
        'is taken as unmapped. "CPU (head)": the same, but unmappable ops ahead of the first mappable op',
        "(a CAST / float QUANTIZE input head) stay on the CPU in front of the Edge TPU subgraph.",
        '"project": `hardware.placement.place_ops` at build time.',
        "",
        "| file | bytes | ops | CPU (strict) | CPU (head) | project | runs in LiteRT |",
        "|---|---:|---:|---|---|---|---|",
    ]
    details = []
    for b in built:
        rows = op_rows(b.data)
        strict, head = expected_cpu(rows)
        proj = _project_placement(out / b.name)
        lines.append(
            f"| `{b.name}` | {len(b.data)} | {len(rows)} | {_ranges(strict)} | {_ranges(head)} | "
            f"{proj} | {b.litert.split(' - ')[0]} |"
        )
        details += [
            "",
            f"## `{b.name}`",
            "",
            (f"Mimics: {b.mimics}. {len(b.data)} bytes, sha256 `{hashlib.sha256(b.data).hexdigest()[:16]}`."),
            "",
            f"- LiteRT: {b.litert}",
        ]
        details += [f"- {n}" for n in b.notes]
        details += [
            f"- expected on the CPU (strict): {_ranges(strict)}; with a CPU head: {_ranges(head)}",
            "",
            "| # | op | inputs | outputs | maps alone? |",
            "|---:|---|---|---|---|",
        ]
        for r in rows:
            details.append(
                f"| {r.index} | {r.kind} | {', '.join(r.ins)} | {', '.join(r.outs)} | "
                f"{'yes' if r.problem is None else 'no: ' + r.problem} |"
            )
    lines += details
    lines += ["", "Shapes print the shape_signature where there is one; a trailing `c` marks a constant.", ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "models", nargs="*", metavar="FILE", help="build only these files (default: all, and rewrite README.md)"
    )
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="output directory (default tests/data/evidence)")
    args = parser.parse_args(argv)
    known = dict(zip(FILES, BUILDERS))
    unknown = [m for m in args.models if m not in known]
    if unknown:
        parser.error(f"unknown model(s) {unknown}; known: {list(known)}")
    args.out.mkdir(parents=True, exist_ok=True)
    built = []
    for fn in [known[m] for m in args.models] or BUILDERS:
        b = fn()
        assert known[b.name] is fn, (b.name, fn.__name__)
        check(b)
        (args.out / b.name).write_bytes(b.data)
        built.append(b)
        print(f"{b.name}: {len(b.data)} bytes; LiteRT {b.litert}", flush=True)
    text = report(built, args.out)
    if not args.models:
        (args.out / "README.md").write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
