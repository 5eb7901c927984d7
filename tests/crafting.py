"""Helpers that derive deliberately bad or special models from a good one (ModelT round trip)."""

from __future__ import annotations

import copy
import ctypes
from collections.abc import Callable
from pathlib import Path

import flatbuffers
from ai_edge_litert import schema_py_generated as schema

EMBEDDED = Path(__file__).resolve().parent.parent / "respect_pass" / "data" / "mobilenet_v2_0.35_96_int8.tflite"


def mutate(data: bytes, edit: Callable[[schema.ModelT], None]) -> bytes:
    """Unpack ``data``, apply ``edit`` to the object tree, pack again with the TFL3 identifier."""
    m = schema.ModelT.InitFromPackedBuf(data, 0)
    edit(m)
    b = flatbuffers.Builder(len(data) + 4096)
    b.Finish(m.Pack(b), file_identifier=b"TFL3")
    return bytes(b.Output())


def float_model(data: bytes) -> bytes:
    def edit(m):
        t = m.subgraphs[0].tensors[m.subgraphs[0].operators[0].outputs[0]]
        t.type = schema.TensorType.FLOAT32

    return mutate(data, edit)


def two_subgraphs(data: bytes) -> bytes:
    def edit(m):
        m.subgraphs.append(copy.deepcopy(m.subgraphs[0]))

    return mutate(data, edit)


def dynamic_batch(data: bytes) -> bytes:
    def edit(m):
        sg = m.subgraphs[0]
        t = sg.tensors[sg.inputs[0]]
        t.shapeSignature = [-1] + [int(d) for d in t.shape[1:]]

    return mutate(data, edit)


def custom_op(data: bytes) -> bytes:
    def edit(m):
        oc = schema.OperatorCodeT()
        oc.builtinCode = schema.BuiltinOperator.CUSTOM
        oc.deprecatedBuiltinCode = schema.BuiltinOperator.CUSTOM
        oc.customCode = b"MyFancyOp"
        m.operatorCodes.append(oc)
        m.subgraphs[0].operators[-1].opcodeIndex = len(m.operatorCodes) - 1
        m.subgraphs[0].operators[-1].builtinOptionsType = 0
        m.subgraphs[0].operators[-1].builtinOptions = None

    return mutate(data, edit)


def wrong_identifier(data: bytes) -> bytes:
    return data[:4] + b"XYZ1" + data[8:]


def compiled(data: bytes) -> bytes:
    """What edgetpu_compiler writes: the mapped ops replaced by one ``edgetpu-custom-op`` (here: the first op)."""

    def edit(m):
        oc = schema.OperatorCodeT()
        oc.builtinCode = oc.deprecatedBuiltinCode = schema.BuiltinOperator.CUSTOM
        oc.customCode = b"edgetpu-custom-op"
        m.operatorCodes.append(oc)
        op = m.subgraphs[0].operators[0]
        op.opcodeIndex = len(m.operatorCodes) - 1
        op.builtinOptionsType, op.builtinOptions, op.customOptions = 0, None, b"\x00" * 16

    return mutate(data, edit)


def bad_zero_point(data: bytes) -> bytes:
    """An int8 conv weight with a non-zero zero point: a valid flatbuffer that LiteRT's conv refuses to prepare."""

    def edit(m):
        sg = m.subgraphs[0]
        w = sg.tensors[sg.operators[0].inputs[1]]
        w.quantization.zeroPoint = [3] + list(w.quantization.zeroPoint)[1:]

    return mutate(data, edit)


def libedgetpu_installed() -> bool:
    """Whether the Edge TPU runtime loads on this machine (tests of its absence skip where it does)."""
    try:
        ctypes.CDLL("libedgetpu.so.1")
        return True
    except OSError:
        return False
