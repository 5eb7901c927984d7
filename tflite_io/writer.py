"""Write the K segment models of a stage map with the LiteRT ``ModelT`` object API.

Each segment keeps the original tensor names (pycoral's PipelinedModelRunner
binds segment inputs to earlier outputs by name), quantization, op versions
and ``intermediates``; it carries only the constant buffers and op codes its
own ops use, an empty buffer 0, no stale signature defs, and the model's
metadata entries with their buffers copied. Constant buffers are 16-byte
aligned like the converter's.
"""
from __future__ import annotations

import copy
import os
import shutil
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path

import flatbuffers
import numpy as np
from ai_edge_litert import schema_py_generated as schema

from .errors import OutputError, StageMapError
from .graph import OpGraph
from .reader import TfliteModel
from .stages import SegmentInterface, segment_interfaces

__all__ = ["segment_file_name", "build_segments", "write_files", "write_segments"]

_ALIGN = 16


def segment_file_name(stem: str, index: int, num_segments: int) -> str:
    """``<stem>_segment_<i>_of_<K>.tflite``, the names ``edgetpu_compiler --num_segments`` uses."""
    return f"{stem}_segment_{index}_of_{num_segments}.tflite"


class _AlignedBufferT(schema.BufferT):
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


def _check_names(graph: OpGraph, interfaces: Sequence[SegmentInterface]) -> None:
    boundary = {t for seg in interfaces for t in seg.inputs + seg.outputs}
    by_name: dict[str, int] = {}
    for t in graph.activation_tensors:
        name = graph.tensors[t].name
        if t in boundary and not name:
            raise StageMapError(f"boundary tensor {t} has no name; PipelinedModelRunner binds segments by tensor name")
        if name in by_name and (t in boundary or by_name[name] in boundary):
            raise StageMapError(f"tensor name '{name}' is used by tensors {by_name[name]} and {t}; segment boundaries need unique names")
        by_name[name] = t


def _segment_model(src: object, seg: SegmentInterface) -> bytes:
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
                buffers.append(_AlignedBufferT(data=data))
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
            buffers.append(_AlignedBufferT(data=src.buffers[md.buffer].data))
            metadata.append(entry)
    m.metadata = metadata or None
    m.buffers = buffers
    size_hint = sum(len(b.data) + _ALIGN for b in buffers[1:] if b.data is not None) + (1 << 16)
    builder = flatbuffers.Builder(size_hint)
    builder.Finish(m.Pack(builder), file_identifier=b"TFL3")
    return bytes(builder.Output())


def build_segments(model: TfliteModel, stages: Sequence[int], num_segments: int) -> tuple[tuple[SegmentInterface, ...], list[bytes]]:
    """Validate the stage map and return the segment interfaces and the K segment flatbuffers."""
    interfaces = segment_interfaces(model.graph, stages, num_segments)
    _check_names(model.graph, interfaces)
    return interfaces, [_segment_model(model.model, seg) for seg in interfaces]


def write_files(out_dir: str | Path, files: Mapping[str, bytes]) -> list[Path]:
    """Write ``files`` (name -> bytes) into ``out_dir`` all or nothing.

    Everything is written to a temporary directory on the same file system
    first and moved into place only when complete, so a failure leaves the
    output directory as it was (missing directories are created only then).
    """
    out = Path(out_dir)
    existing = out
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        what = "exists and is not a directory" if existing == out else f"{existing} is not a directory"
        raise OutputError(str(out), what)
    try:
        tmp = Path(tempfile.mkdtemp(prefix=".respect-pass-", dir=existing))
        try:
            for name, data in files.items():
                (tmp / name).write_bytes(data)
            if out.exists():
                for name in files:
                    os.replace(tmp / name, out / name)
            else:
                out.parent.mkdir(parents=True, exist_ok=True)
                os.replace(tmp, out)
        finally:
            if tmp.exists():
                shutil.rmtree(tmp, ignore_errors=True)
    except OSError as exc:
        raise OutputError(str(out), exc.strerror or str(exc)) from None
    return [out / name for name in files]


def write_segments(
    model: TfliteModel,
    stages: Sequence[int],
    num_segments: int,
    out_dir: str | Path,
    stem: str | None = None,
    extra_files: Mapping[str, bytes] | None = None,
) -> list[Path]:
    """Write ``<stem>_segment_<i>_of_<K>.tflite`` for i < K (plus ``extra_files``) into ``out_dir``.

    Returns the segment paths in stage order.
    """
    stem = stem or model.path.stem
    _, blobs = build_segments(model, stages, num_segments)
    files = {segment_file_name(stem, i, num_segments): b for i, b in enumerate(blobs)}
    files.update(extra_files or {})
    return write_files(out_dir, files)[:num_segments]
