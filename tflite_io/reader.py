"""Read a quantized ``.tflite`` file into an :class:`OpGraph`.

The flatbuffer is first checked by LiteRT's own verifier (building an
interpreter over the bytes), so truncated or corrupted files become a
:class:`ModelFormatError` instead of a crash; then it is unpacked with the
object API of ``ai_edge_litert.schema_py_generated``, and finally prepared
once in LiteRT (``allocate_tensors``), so a model the interpreter would reject
(bad quantization parameters, inconsistent shapes) is refused here, naming the
op, before anything is scheduled or written. Custom ops are kept as opaque ops;
where LiteRT has no kernel for one (``PosenetDecoderOp``), the part of the
model before it is prepared instead and the op is listed in
:attr:`TfliteModel.no_kernel_ops`. Which ops run on the Edge TPU and which on
the CPU is not decided here but by ``hardware.placement``.
"""

from __future__ import annotations

import logging
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from ai_edge_litert import schema_py_generated as schema

from .errors import ModelFormatError, UnsupportedModelError
from .graph import Op, OpGraph, Quantization, TensorInfo, distinct_constants
from .macs import op_macs
from .stages import SegmentInterface
from .submodel import submodel

__all__ = ["TfliteModel", "read", "read_model", "parse_model", "op_type_name", "custom_op_codes", "EDGETPU_CUSTOM_OP"]

log = logging.getLogger(__name__)

_OP_NAMES = {v: k for k, v in vars(schema.BuiltinOperator).items() if not k.startswith("_")}
_TYPE_NAMES = {v: k for k, v in vars(schema.TensorType).items() if not k.startswith("_")}
_DTYPES = {
    "FLOAT32": "float32",
    "FLOAT16": "float16",
    "FLOAT64": "float64",
    "INT32": "int32",
    "UINT8": "uint8",
    "INT64": "int64",
    "BOOL": "bool",
    "INT16": "int16",
    "INT8": "int8",
    "UINT64": "uint64",
    "UINT32": "uint32",
    "UINT16": "uint16",
}
#: The custom op that edgetpu_compiler puts in place of the ops it maps to the Edge TPU.
EDGETPU_CUSTOM_OP = "edgetpu-custom-op"


@dataclass(frozen=True)
class TfliteModel:
    """A verified model: its bytes, its object-API tree (treat as read-only) and its OpGraph."""

    path: Path
    data: bytes
    model: Any  # schema.ModelT
    graph: OpGraph
    #: Custom ops LiteRT has no kernel for (their descendants cannot run either); verification stops before them.
    no_kernel_ops: frozenset[int] = field(default=frozenset())
    #: Tensors whose dynamic batch dimension ``--fix-batch`` set to 1 (in the segments, never in the input file).
    fixed_batch: tuple[str, ...] = ()


def op_type_name(opcode: Any) -> str:
    """Builtin operator name of an ``OperatorCodeT`` (``CUSTOM`` ops keep their custom name apart)."""
    code = max(int(opcode.builtinCode), int(opcode.deprecatedBuiltinCode))
    return _OP_NAMES.get(code, f"UNKNOWN_{code}")


def read(path: str | Path, fix_batch: bool = False) -> OpGraph:
    """Read ``path`` and return its OpGraph (see :func:`read_model`)."""
    return read_model(path, fix_batch).graph


def read_model(path: str | Path, fix_batch: bool = False) -> TfliteModel:
    """Read and check a ``.tflite`` model.

    Raises :class:`ModelFormatError` for files that are missing, unreadable,
    not a valid TFLite flatbuffer, or that LiteRT cannot prepare, and
    :class:`UnsupportedModelError` for valid models respect-pass cannot
    partition (already compiled for the Edge TPU, several subgraphs, dynamic
    shapes other than a batch dimension that ``fix_batch`` sets to 1, external
    buffers).
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
    return parse_model(data, path, fix_batch)


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


def parse_model(data: bytes, path: Path, fix_batch: bool = False) -> TfliteModel:
    """Verify, unpack and prepare model bytes (``path`` is used for names and messages only)."""
    shown = str(path)
    if len(data) < 8:
        raise ModelFormatError(shown, f"file is {len(data)} bytes, too small to be a TFLite model")
    ident = data[4:8]
    if ident != b"TFL3":
        raise ModelFormatError(shown, f"file identifier is {ident!r}, expected b'TFL3': not a TFLite model")
    interpreter = _verify_flatbuffer(data, shown)
    if EDGETPU_CUSTOM_OP in custom_op_codes(data, shown):
        raise UnsupportedModelError(
            shown,
            "this model is already compiled for the Edge TPU (it contains "
            f"{EDGETPU_CUSTOM_OP}); give the model from before edgetpu_compiler",
        )
    try:
        model = schema.ModelT.InitFromPackedBuf(data, 0)
    except Exception as exc:  # the verifier passed but the object API still choked
        raise ModelFormatError(shown, f"corrupt flatbuffer ({type(exc).__name__})") from None
    fixed: list[str] = []
    try:
        graph = _build_graph(model, path.stem, shown, fixed if fix_batch else None)
    except (UnsupportedModelError, ModelFormatError):
        raise
    except Exception as exc:
        raise ModelFormatError(shown, f"inconsistent model structure ({type(exc).__name__}: {exc})") from None
    no_kernel = _prepare(interpreter, model, graph, shown)
    return TfliteModel(path, data, model, graph, no_kernel, tuple(fixed))


def _short(name: str, limit: int = 60) -> str:
    return name if len(name) <= limit else name[: limit - 3] + "..."


def _interpreter(data: bytes) -> Any:
    from ai_edge_litert.interpreter import Interpreter, OpResolverType

    return Interpreter(model_content=data, experimental_op_resolver_type=OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES)


def _verify_flatbuffer(data: bytes, shown: str) -> Any:
    """An interpreter over ``data`` (LiteRT verifies the flatbuffer while building it)."""
    try:
        return _interpreter(data)
    except (ValueError, RuntimeError) as exc:
        msg = " ".join(str(exc).split())
        raise ModelFormatError(shown, f"not a valid TFLite flatbuffer ({_short(msg, 160)})") from None


_UNRESOLVED = re.compile(r"unresolved custom op: (.+?)\.(?:\s|$)")
_NODE = re.compile(r"Node number (\d+) \((.+?)\) failed to prepare")


def _prepare(interpreter: Any, model: Any, graph: OpGraph, shown: str) -> frozenset[int]:
    """Prepare the model in LiteRT once; return the custom ops that have no kernel there.

    When LiteRT reports an unresolved custom op, that op and its descendants are
    left out and the rest is prepared instead (again, until it prepares or fails
    for another reason). Any other failure is a :class:`ModelFormatError` naming the op.
    """
    no_kernel: set[int] = set()
    kept = list(range(graph.num_ops))
    while True:
        try:
            interpreter.allocate_tensors()
            if not no_kernel:
                _check_shapes(interpreter, graph, shown)
            return frozenset(no_kernel)
        except (RuntimeError, ValueError) as exc:
            msg = " ".join(str(exc).split())
        unresolved = _UNRESOLVED.search(msg)
        if unresolved is None:
            node = _NODE.search(msg)
            where = "the model"
            if node and int(node.group(1)) < len(kept):
                v = kept[int(node.group(1))]
                where = f"op {v} ({graph.ops[v].label})"
            detail = _short(msg.split("Node number")[0].strip(), 160)
            raise ModelFormatError(shown, f"LiteRT cannot prepare {where}: {detail}") from None
        name = unresolved.group(1)
        found = {v for v in kept if graph.ops[v].op_type == "CUSTOM" and graph.ops[v].custom_code == name}
        if not found:
            raise ModelFormatError(shown, f"LiteRT cannot prepare the model: {_short(msg, 160)}")
        no_kernel |= found
        dropped = descendants(graph, no_kernel)
        kept = [v for v in range(graph.num_ops) if v not in dropped]
        if not kept:
            return frozenset(no_kernel)
        interpreter = _verify_flatbuffer(submodel(model, runnable_interface(graph, kept)), shown)


def _check_shapes(interpreter: Any, graph: OpGraph, shown: str) -> None:
    """The shapes LiteRT inferred while preparing must be the ones the file states (a corrupt input shape
    would otherwise propagate through the model: a batch of 3841 where every later tensor says 1)."""
    for d in interpreter.get_tensor_details():
        i = d["index"]
        if i < len(graph.tensors) and graph.tensors[i].shape and tuple(int(x) for x in d["shape"]) != graph.tensors[i].shape:
            raise ModelFormatError(
                shown,
                f"tensor {i} '{_short(graph.tensors[i].name)}' is {list(graph.tensors[i].shape)} "
                f"in the file but {[int(x) for x in d['shape']]} when LiteRT prepares the model",
            )


def _check_quantization(t: TensorInfo, shown: str) -> None:
    """Quantization LiteRT aborts on (instead of reporting): scales must be finite and positive, zero
    points inside the type's range."""
    q = t.quantization
    if q is None or t.dtype not in _ZERO_POINT_RANGE:
        return
    if not all(math.isfinite(x) and x > 0 for x in q.scale):
        raise ModelFormatError(
            shown,
            f"tensor {t.index} '{_short(t.name)}' has a quantization scale that is not a "
            f"positive number ({list(q.scale)[:4]})",
        )
    lo, hi = _ZERO_POINT_RANGE[t.dtype]
    if not all(lo <= z <= hi for z in q.zero_point):
        raise ModelFormatError(shown, f"tensor {t.index} '{_short(t.name)}' has a zero point outside the {t.dtype} range")


_ZERO_POINT_RANGE = {"int8": (-128, 127), "uint8": (0, 255), "int16": (-32768, 32767)}


def descendants(graph: OpGraph, roots: set[int] | frozenset[int]) -> set[int]:
    """``roots`` and every op that depends on one of them."""
    out = set(roots)
    for v in range(graph.num_ops):
        if v not in out and any(u in out for u in graph.preds[v]):
            out.add(v)
    return out


def runnable_interface(graph: OpGraph, ops: list[int]) -> SegmentInterface:
    """The interface of a sub-model made of ``ops``: it reads what they read from outside and writes
    every tensor they produce that is a model output or is read by an op outside the set."""
    inside = set(ops)
    produced = {t for v in ops for t in graph.ops[v].outputs}
    reads = {t for v in ops for t in graph.ops[v].inputs if t >= 0}
    inputs = tuple(t for t in graph.inputs if t in reads) + tuple(sorted(t for t in reads - produced if t in graph.producer))
    outputs = tuple(
        sorted(t for t in produced if t in graph.outputs or any(r not in inside for r in graph.consumers.get(t, ())))
    )
    return SegmentInterface(-1, tuple(ops), inputs, outputs, 0)


def _build_graph(model: Any, name: str, shown: str, fixed: list[str] | None) -> OpGraph:
    subgraphs = model.subgraphs or []
    if len(subgraphs) != 1:
        raise UnsupportedModelError(
            shown, f"model has {len(subgraphs)} subgraphs; only single-subgraph models are supported"
        )
    sg = subgraphs[0]
    buffers = model.buffers or []
    tensors = tuple(_tensor_info(i, t, buffers, shown, fixed) for i, t in enumerate(sg.tensors or []))
    ops = []
    for i, op in enumerate(sg.operators or []):
        opcode = model.operatorCodes[op.opcodeIndex]
        op_type = op_type_name(opcode)
        custom = (opcode.customCode or b"").decode("utf-8", "replace") if op_type == "CUSTOM" else ""
        ins = tuple(int(t) for t in (op.inputs if op.inputs is not None else ()))
        outs = tuple(int(t) for t in (op.outputs if op.outputs is not None else ()))
        param_bytes = sum(t.nbytes for t in distinct_constants(tensors, ins).values())
        adj_x = bool(getattr(op.builtinOptions, "adjX", False))
        macs = op_macs(
            op_type,
            [tensors[t].shape if t >= 0 else None for t in ins],
            [tensors[t].shape for t in outs],
            adj_x=adj_x,
        )
        if custom:  # opaque: count the elements it reads (e.g. boxes x classes for detection post-processing)
            macs = sum(tensors[t].num_elements for t in ins if t >= 0)
        ops.append(Op(i, op_type, ins, outs, param_bytes, int(macs), custom))
    inputs = tuple(int(t) for t in (sg.inputs if sg.inputs is not None else ()))
    outputs = tuple(int(t) for t in (sg.outputs if sg.outputs is not None else ()))
    if not ops:
        raise UnsupportedModelError(shown, "model has no operators")
    produced = {t for op in ops for t in op.outputs} | set(inputs)
    variables = {i for i, t in enumerate(sg.tensors or []) if getattr(t, "isVariable", False)}
    for op in ops:
        for t in op.inputs:
            if t >= 0 and t not in produced and not tensors[t].is_constant and t not in variables:
                raise ModelFormatError(
                    shown,
                    f"op {op.index} ({op.label}) reads tensor {t} '{_short(tensors[t].name)}', "
                    "which has no data, no producer and is not a model input",
                )
    if not inputs or not outputs:
        raise UnsupportedModelError(shown, "model has no inputs or no outputs")
    return OpGraph(name, tuple(ops), tensors, inputs, outputs)


def _tensor_info(index: int, t: Any, buffers: list[Any], shown: str, fixed: list[str] | None) -> TensorInfo:
    """One tensor; with ``fixed`` (a list, for ``--fix-batch``) a dynamic batch dimension becomes 1 in the
    in-memory model (which the segments are built from) and the tensor's name is appended to ``fixed``."""
    try:
        name = (t.name or b"").decode("utf-8")
    except UnicodeDecodeError:
        raise ModelFormatError(shown, f"tensor {index} has a name that is not UTF-8") from None
    shape = tuple(int(d) for d in (t.shape if t.shape is not None else ()))
    sig = tuple(int(d) for d in (t.shapeSignature if t.shapeSignature is not None else shape))
    if any(d < 0 for d in shape + sig):
        batch_only = len(sig) == len(shape) and sig[0] < 0 and shape[:1] == (1,) and all(d >= 0 for d in sig[1:] + shape)
        if not batch_only:
            raise UnsupportedModelError(
                shown,
                f"tensor '{_short(name)}' has a dynamic shape {list(sig)}; fix the input shape (batch 1) before converting",
            )
        if fixed is None:
            raise UnsupportedModelError(
                shown,
                f"tensor '{_short(name)}' has a dynamic batch dimension {list(sig)}; "
                "rerun with --fix-batch to set it to 1 in the segments (the Edge TPU "
                "needs static shapes)",
            )
        t.shapeSignature = None
        fixed.append(name)
    type_name = _TYPE_NAMES.get(t.type, f"TYPE_{t.type}")
    dtype = _DTYPES.get(type_name, type_name.lower())
    buf = buffers[t.buffer] if 0 < t.buffer < len(buffers) else None
    if buf is not None and int(getattr(buf, "offset", 0) or 0) > 1:
        raise UnsupportedModelError(
            shown, f"tensor '{name}' keeps its data outside the flatbuffer (models over 2 GB are not supported)"
        )
    data = getattr(buf, "data", None)
    is_const = data is not None and len(data) > 0
    if data is not None and is_const:
        nbytes = len(data)
    else:
        itemsize = np.dtype(dtype).itemsize if type_name in _DTYPES else 1
        nbytes = int(np.prod(shape, dtype=np.int64)) * itemsize if shape else itemsize
    q = t.quantization
    quant = None
    if q is not None and q.scale is not None and len(q.scale) > 0:
        zp = q.zeroPoint if q.zeroPoint is not None else ()
        quant = Quantization(tuple(float(x) for x in q.scale), tuple(int(x) for x in zp), int(q.quantizedDimension))
    info = TensorInfo(index, name, dtype, shape, nbytes, int(t.buffer) if is_const else -1, quant)
    _check_quantization(info, shown)
    return info
