"""Build a model from a subset of another model's ops (the segment writer's core, also used to
prepare the runnable part of a model whose custom ops LiteRT has no kernel for).

The sub-model keeps the original tensor names (pycoral's PipelinedModelRunner
binds segment inputs to earlier outputs by name), quantization, op versions,
custom codes and options, and ``intermediates``; it carries only the constant
buffers and op codes its own ops use, an empty buffer 0, no stale signature
defs, and the model's metadata entries with their buffers copied. Constant
buffers are 16-byte aligned like the converter's.
"""

from __future__ import annotations

import copy
from typing import Any

import flatbuffers
import numpy as np
from ai_edge_litert import schema_py_generated as schema

from .stages import SegmentInterface

__all__ = ["submodel", "AlignedBufferT"]

_ALIGN = 16


class AlignedBufferT(schema.BufferT):
    """A BufferT whose data vector is 16-byte aligned in the output file."""

    def Pack(self, builder: flatbuffers.Builder) -> int:
        data = None
        if self.data is not None and len(self.data):
            payload = np.asarray(self.data, dtype=np.uint8).tobytes()
            builder.StartVector(1, len(payload), _ALIGN)
            builder.head = builder.head - len(payload)
            builder.Bytes[builder.head : builder.head + len(payload)] = payload
            builder.vectorNumElems = len(payload)
            data = builder.EndVector()
        schema.BufferStart(builder)
        if data is not None:
            schema.BufferAddData(builder, data)
        return schema.BufferEnd(builder)


def submodel(src: Any, seg: SegmentInterface) -> bytes:
    """The flatbuffer of a model made of ``seg.ops`` of ``src`` (a ``schema.ModelT``), reading ``seg.inputs`` and
    writing ``seg.outputs``; ops, tensors, op codes (custom options included) and constants are copied as they are."""
    sg = src.subgraphs[0]
    ops = [sg.operators[i] for i in seg.ops]
    used: set[int] = set(seg.inputs) | set(seg.outputs)
    for op in ops:
        for field in (op.inputs, op.outputs, op.intermediates):
            if field is not None:
                used.update(int(t) for t in field if t >= 0)
    tmap = {old: new for new, old in enumerate(sorted(used))}
    buffers: list[schema.BufferT] = [schema.BufferT()]
    bmap: dict[int, int] = {}
    tensors = []
    for old in sorted(used):
        t = copy.copy(sg.tensors[old])
        data = src.buffers[t.buffer].data if 0 < t.buffer < len(src.buffers) else None
        if data is not None and len(data):
            if t.buffer not in bmap:
                bmap[t.buffer] = len(buffers)
                buffers.append(AlignedBufferT(data=data))
            t.buffer = bmap[t.buffer]
        else:
            t.buffer = 0
        tensors.append(t)
    ocmap = {old: new for new, old in enumerate(sorted({int(op.opcodeIndex) for op in ops}))}
    new_ops = []
    for op in ops:
        o = copy.copy(op)
        o.opcodeIndex = ocmap[int(op.opcodeIndex)]
        o.inputs = np.array([tmap[int(t)] if t >= 0 else -1 for t in op.inputs], dtype=np.int32)
        o.outputs = np.array([tmap[int(t)] for t in op.outputs], dtype=np.int32)
        if op.intermediates is not None:
            o.intermediates = np.array([tmap[int(t)] for t in op.intermediates], dtype=np.int32)
        new_ops.append(o)
    sub = schema.SubGraphT()
    sub.tensors = tensors
    sub.inputs = np.array([tmap[t] for t in seg.inputs], dtype=np.int32)
    sub.outputs = np.array([tmap[t] for t in seg.outputs], dtype=np.int32)
    sub.operators = new_ops
    sub.name = sg.name
    m = schema.ModelT()
    m.version = src.version
    m.description = src.description
    m.operatorCodes = [src.operatorCodes[old] for old in sorted(ocmap)]
    m.subgraphs = [sub]
    metadata = []
    for md in src.metadata or []:
        if 0 < md.buffer < len(src.buffers):
            entry = copy.copy(md)
            entry.buffer = len(buffers)
            buffers.append(AlignedBufferT(data=src.buffers[md.buffer].data))
            metadata.append(entry)
    m.metadata = metadata or None
    m.buffers = buffers
    size_hint = sum(len(b.data) + _ALIGN for b in buffers[1:] if b.data is not None) + (1 << 16)
    builder = flatbuffers.Builder(size_hint)
    builder.Finish(m.Pack(builder), file_identifier=b"TFL3")
    return bytes(builder.Output())
