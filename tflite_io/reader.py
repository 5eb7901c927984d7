"""Read a full-integer-quantized ``.tflite`` file into an :class:`OpGraph`.

The flatbuffer is first checked by LiteRT's own verifier (building an
interpreter over the bytes), so truncated or corrupted files become a
:class:`ModelFormatError` instead of a crash; then it is unpacked with the
object API of ``ai_edge_litert.schema_py_generated``.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from ai_edge_litert import schema_py_generated as schema

from .errors import ModelFormatError, UnsupportedModelError
from .graph import Op, OpGraph, Quantization, TensorInfo, distinct_constants
from .macs import op_macs

__all__ = ["TfliteModel", "read", "read_model", "op_type_name", "custom_op_codes", "EDGETPU_OPS", "EDGETPU_CUSTOM_OP"]

log = logging.getLogger(__name__)

_OP_NAMES = {v: k for k, v in vars(schema.BuiltinOperator).items() if not k.startswith("_")}
_TYPE_NAMES = {v: k for k, v in vars(schema.TensorType).items() if not k.startswith("_")}
_DTYPES = {
    "FLOAT32": "float32", "FLOAT16": "float16", "FLOAT64": "float64", "INT32": "int32",
    "UINT8": "uint8", "INT64": "int64", "BOOL": "bool", "INT16": "int16", "INT8": "int8",
    "UINT64": "uint64", "UINT32": "uint32", "UINT16": "uint16",
}
_FLOAT_TYPES = {"FLOAT32", "FLOAT16", "FLOAT64", "BFLOAT16"}
_QUANT_BOUNDARY_OPS = {"QUANTIZE", "DEQUANTIZE"}

#: Operators the Edge TPU compiler can map (coral.ai/docs/edgetpu/models-intro); others run on the CPU.
EDGETPU_OPS = frozenset({
    "ADD", "AVERAGE_POOL_2D", "CONCATENATION", "CONV_2D", "DEPTHWISE_CONV_2D", "DEPTH_TO_SPACE",
    "EXP", "FULLY_CONNECTED", "GATHER", "HARD_SWISH", "L2_NORMALIZATION", "LOGISTIC", "LSTM",
    "MAXIMUM", "MAX_POOL_2D", "MEAN", "MINIMUM", "MUL", "PACK", "PAD", "PADV2", "PRELU", "QUANTIZE",
    "REDUCE_MAX", "REDUCE_MIN", "RELU", "RELU6", "RELU_N1_TO_1", "RESHAPE", "RESIZE_BILINEAR",
    "RESIZE_NEAREST_NEIGHBOR", "RSQRT", "SLICE", "SOFTMAX", "SPACE_TO_DEPTH", "SPLIT", "SQRT",
    "SQUARED_DIFFERENCE", "SQUEEZE", "STRIDED_SLICE", "SUB", "SUM", "TANH", "TRANSPOSE", "TRANSPOSE_CONV",
    "UNPACK", "DEQUANTIZE", "LEAKY_RELU", "BATCH_MATMUL",
})

#: The custom op that edgetpu_compiler puts in place of the ops it maps to the Edge TPU.
EDGETPU_CUSTOM_OP = "edgetpu-custom-op"


@dataclass(frozen=True)
class TfliteModel:
    """A verified model: its bytes, its object-API tree (treat as read-only) and its OpGraph."""

    path: Path
    data: bytes
    model: Any  # schema.ModelT
    graph: OpGraph


def op_type_name(opcode: Any) -> str:
    """Builtin operator name of an ``OperatorCodeT`` (``CUSTOM`` ops keep their custom name apart)."""
    code = max(int(opcode.builtinCode), int(opcode.deprecatedBuiltinCode))
    return _OP_NAMES.get(code, f"UNKNOWN_{code}")


def read(path: str | Path) -> OpGraph:
    """Read ``path`` and return its OpGraph (see :func:`read_model`)."""
    return read_model(path).graph


def read_model(path: str | Path) -> TfliteModel:
    """Read and check a full-integer ``.tflite`` model.

    Raises :class:`ModelFormatError` for files that are missing, unreadable or
    not a valid TFLite flatbuffer, and :class:`UnsupportedModelError` for
    valid models respect-pass cannot partition (several subgraphs, dynamic
    shapes, custom ops, float compute, external buffers).
    """
    path = Path(path)
    shown = str(path)
    if not path.exists():
        raise ModelFormatError(shown, "no such file")
    if not path.is_file():
        raise ModelFormatError(shown, "not a regular file")
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ModelFormatError(shown, f"cannot read file ({exc.strerror})") from None
    return parse_model(data, path)


def custom_op_codes(data: bytes, shown: str = "model") -> tuple[str, ...]:
    """The custom op names a model's operator-code table lists (e.g. ``edgetpu-custom-op`` after compiling).

    Reads only the operator codes, without building a graph, so it also works
    on compiled Edge TPU models that :func:`parse_model` rejects.
    """
    if len(data) < 8 or data[4:8] != b"TFL3":
        raise ModelFormatError(shown, "not a TFLite model (file identifier is not b'TFL3')")
    try:
        root = schema.Model.GetRootAsModel(data, 0)
        codes = (root.OperatorCodes(i).CustomCode() for i in range(root.OperatorCodesLength()))
        return tuple(c.decode("utf-8", "replace") for c in codes if c)
    except Exception as exc:
        raise ModelFormatError(shown, f"corrupt flatbuffer ({type(exc).__name__})") from None


def parse_model(data: bytes, path: Path) -> TfliteModel:
    """Verify and unpack model bytes (``path`` is used for names and messages only)."""
    shown = str(path)
    if len(data) < 8:
        raise ModelFormatError(shown, f"file is {len(data)} bytes, too small to be a TFLite model")
    ident = data[4:8]
    if ident != b"TFL3":
        raise ModelFormatError(shown, f"file identifier is {ident!r}, expected b'TFL3': not a TFLite model")
    _verify_flatbuffer(data, shown)
    try:
        model = schema.ModelT.InitFromPackedBuf(data, 0)
    except Exception as exc:  # the verifier passed but the object API still choked
        raise ModelFormatError(shown, f"corrupt flatbuffer ({type(exc).__name__})") from None
    try:
        graph = _build_graph(model, path.stem, shown)
    except (UnsupportedModelError, ModelFormatError):
        raise
    except Exception as exc:
        raise ModelFormatError(shown, f"inconsistent model structure ({type(exc).__name__}: {exc})") from None
    return TfliteModel(path, data, model, graph)


def _short(name: str, limit: int = 60) -> str:
    return name if len(name) <= limit else name[: limit - 3] + "..."


def _verify_flatbuffer(data: bytes, shown: str) -> None:
    from ai_edge_litert.interpreter import Interpreter

    try:
        Interpreter(model_content=data)
    except ValueError as exc:
        msg = " ".join(str(exc).split())
        if "custom op" in msg.lower():
            raise UnsupportedModelError(shown, f"custom operators are not supported ({msg})") from None
        raise ModelFormatError(shown, f"not a valid TFLite flatbuffer ({msg})") from None


def _build_graph(model: Any, name: str, shown: str) -> OpGraph:
    subgraphs = model.subgraphs or []
    if len(subgraphs) != 1:
        raise UnsupportedModelError(shown, f"model has {len(subgraphs)} subgraphs; only single-subgraph models are supported")
    sg = subgraphs[0]
    buffers = model.buffers or []
    tensors = tuple(_tensor_info(i, t, buffers, shown) for i, t in enumerate(sg.tensors or []))
    ops = []
    for i, op in enumerate(sg.operators or []):
        opcode = model.operatorCodes[op.opcodeIndex]
        op_type = op_type_name(opcode)
        if op_type == "CUSTOM":
            custom = (opcode.customCode or b"").decode("utf-8", "replace")
            raise UnsupportedModelError(shown, f"op {i} is the custom operator '{custom}'; custom operators are not supported")
        ins = tuple(int(t) for t in (op.inputs if op.inputs is not None else ()))
        outs = tuple(int(t) for t in (op.outputs if op.outputs is not None else ()))
        if op_type not in _QUANT_BOUNDARY_OPS:
            for t in ins + outs:
                if t >= 0 and _TYPE_NAMES.get(sg.tensors[t].type) in _FLOAT_TYPES:
                    raise UnsupportedModelError(
                        shown,
                        f"model is not full-integer quantized: op {i} ({op_type}) uses "
                        f"{_TYPE_NAMES[sg.tensors[t].type].lower()} tensor '{_short(tensors[t].name)}' "
                        "(convert with a representative dataset to int8)",
                    )
        if op_type not in EDGETPU_OPS:
            log.warning("op %d (%s) is not supported by the Edge TPU and will run on the CPU", i, op_type)
        param_bytes = sum(t.nbytes for t in distinct_constants(tensors, ins).values())
        adj_x = bool(getattr(op.builtinOptions, "adjX", False))
        macs = op_macs(
            op_type,
            [tensors[t].shape if t >= 0 else None for t in ins],
            [tensors[t].shape for t in outs],
            adj_x=adj_x,
        )
        ops.append(Op(i, op_type, ins, outs, param_bytes, int(macs)))
    inputs = tuple(int(t) for t in (sg.inputs if sg.inputs is not None else ()))
    outputs = tuple(int(t) for t in (sg.outputs if sg.outputs is not None else ()))
    if not ops:
        raise UnsupportedModelError(shown, "model has no operators")
    if not inputs or not outputs:
        raise UnsupportedModelError(shown, "model has no inputs or no outputs")
    return OpGraph(name, tuple(ops), tensors, inputs, outputs)


def _tensor_info(index: int, t: Any, buffers: list[Any], shown: str) -> TensorInfo:
    name = (t.name or b"").decode("utf-8", "replace")
    shape = tuple(int(d) for d in (t.shape if t.shape is not None else ()))
    sig = tuple(int(d) for d in (t.shapeSignature if t.shapeSignature is not None else shape))
    if any(d < 0 for d in shape + sig):
        raise UnsupportedModelError(shown, f"tensor '{_short(name)}' has a dynamic shape {list(sig)}; fix the input shape (batch 1) before converting")
    type_name = _TYPE_NAMES.get(t.type, f"TYPE_{t.type}")
    dtype = _DTYPES.get(type_name, type_name.lower())
    buf = buffers[t.buffer] if 0 < t.buffer < len(buffers) else None
    if buf is not None and int(getattr(buf, "offset", 0) or 0) > 1:
        raise UnsupportedModelError(shown, f"tensor '{name}' keeps its data outside the flatbuffer (models over 2 GB are not supported)")
    data = getattr(buf, "data", None)
    is_const = data is not None and len(data) > 0
    if is_const:
        nbytes = len(data)
    else:
        itemsize = np.dtype(dtype).itemsize if type_name in _DTYPES else 1
        nbytes = int(np.prod(shape, dtype=np.int64)) * itemsize if shape else itemsize
    q = t.quantization
    quant = None
    if q is not None and q.scale is not None and len(q.scale) > 0:
        zp = q.zeroPoint if q.zeroPoint is not None else ()
        quant = Quantization(tuple(float(x) for x in q.scale), tuple(int(x) for x in zp), int(q.quantizedDimension))
    return TensorInfo(index, name, dtype, shape, nbytes, int(t.buffer) if is_const else -1, quant)
