"""Write the K segment models of a stage map (each built by :func:`tflite_io.submodel.submodel`),
all or nothing."""

from __future__ import annotations

import os
import re
import shutil
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path

from .errors import OutputError, StageMapError
from .graph import OpGraph
from .reader import TfliteModel
from .stages import SegmentInterface, segment_interfaces
from .submodel import submodel

__all__ = ["segment_file_name", "build_segments", "stale_segment_files", "write_files", "write_segments"]


def _umask() -> int:
    """The process's umask (read by setting it and setting it back)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def segment_file_name(stem: str, index: int, num_segments: int) -> str:
    """``<stem>_segment_<i>_of_<K>.tflite``, the names ``edgetpu_compiler --num_segments`` uses."""
    return f"{stem}_segment_{index}_of_{num_segments}.tflite"


def _check_names(graph: OpGraph, interfaces: Sequence[SegmentInterface]) -> None:
    boundary = {t for seg in interfaces for t in seg.inputs + seg.outputs}
    by_name: dict[str, int] = {}
    for t in graph.activation_tensors:
        name = graph.tensors[t].name
        if t in boundary and not name:
            raise StageMapError(f"boundary tensor {t} has no name; PipelinedModelRunner binds segments by tensor name")
        if name in by_name and (t in boundary or by_name[name] in boundary):
            raise StageMapError(
                f"tensor name '{name}' is used by tensors {by_name[name]} and {t}; segment boundaries need unique names"
            )
        by_name[name] = t


def build_segments(
    model: TfliteModel, stages: Sequence[int], num_segments: int
) -> tuple[tuple[SegmentInterface, ...], list[bytes]]:
    """Validate the stage map and return the segment interfaces and the K segment flatbuffers."""
    interfaces = segment_interfaces(model.graph, stages, num_segments)
    _check_names(model.graph, interfaces)
    return interfaces, [submodel(model.model, seg) for seg in interfaces]


def stale_segment_files(out_dir: str | Path, stem: str, num_segments: int) -> list[str]:
    """Files in ``out_dir`` from a run of ``stem`` with another number of segments (``<stem>_segment_<i>_of_<N>``
    ``.tflite``, ``_edgetpu.tflite`` and ``_edgetpu.log`` with N != ``num_segments``): left there, a directory
    would mix two plans."""
    out = Path(out_dir)
    if not out.is_dir():
        return []
    pattern = re.compile(rf"{re.escape(stem)}_segment_\d+_of_(\d+)(\.tflite|_edgetpu\.tflite|_edgetpu\.log)")
    return sorted(
        f.name
        for f in out.iterdir()
        if (m := pattern.fullmatch(f.name)) is not None and int(m.group(1)) != num_segments and f.is_file()
    )


def write_files(out_dir: str | Path, files: Mapping[str, bytes], remove: Sequence[str] = ()) -> list[Path]:
    """Write ``files`` (name -> bytes) into ``out_dir`` all or nothing, then remove the files named ``remove``
    there (stale outputs of an earlier run).

    Everything is written to a temporary directory on the same file system
    first and moved into place only when complete, so a failure leaves the
    output directory as it was (missing directories are created only then,
    with the permissions the umask gives, as ``mkdir`` would).
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
                for name in remove:
                    if name not in files:
                        (out / name).unlink(missing_ok=True)
            else:
                out.parent.mkdir(parents=True, exist_ok=True)
                tmp.chmod(0o777 & ~_umask())  # mkdtemp makes it 0700 whatever the umask
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
