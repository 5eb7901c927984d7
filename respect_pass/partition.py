"""The library entry point behind ``respect-pass MODEL -n K -o DIR``."""
from __future__ import annotations

import json
import logging
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from tflite_io import (
    OutputError,
    RespectPassError,
    TfliteModel,
    VerificationError,
    VerifyReport,
    build_segments,
    read_model,
    segment_file_name,
    verify_segments,
    write_files,
)

from hardware import USB, CompiledSegment, EdgeTpuSpec, compile_segments, stage_cost
from hardware.compiler import find_compiler
from hardware.progress import ProgressFactory, no_progress

from .plan import Plan, plan_json
from .plot import stage_plot_png
from .schedulers import get_scheduler

__all__ = ["PartitionResult", "partition", "plan_file_name"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class PartitionResult:
    """What one partition run produced: the plan, the written files, the plan document."""

    plan: Plan
    segment_paths: tuple[Path, ...]
    plan_path: Path
    plan_doc: dict[str, Any]
    verify: VerifyReport | None
    compiled_paths: tuple[Path, ...] = ()
    stage_breakdown: tuple[dict[str, Any], ...] = ()
    plot_path: Path | None = None


def plan_file_name(stem: str) -> str:
    return f"{stem}_plan.json"


def partition(
    model_path: str | Path,
    num_segments: int,
    out_dir: str | Path,
    scheduler: str = "respect",
    verify: bool = False,
    model: TfliteModel | None = None,
    spec: EdgeTpuSpec = USB,
    compile: bool = False,
    scheduler_options: dict[str, Any] | None = None,
    plot: str | Path | None = None,
    progress: ProgressFactory = no_progress,
) -> PartitionResult:
    """Schedule ``model_path`` onto ``num_segments`` Edge TPUs and write the segment files.

    Segments and ``<stem>_plan.json`` are built in memory, optionally checked
    bit-exact against the full model, and written all or nothing. Stage times
    in the plan are predicted by the cost model with ``spec``. Raises a
    :class:`RespectPassError` subclass for every user error; the input model is
    only read. With ``compile``, every segment is also compiled by
    ``edgetpu_compiler`` before anything is written, and a failed compile or
    an op left on the CPU writes nothing. ``plot`` names a PNG of the
    predicted per-stage breakdown, rendered before anything is written.
    """
    if compile:
        find_compiler()  # fail before scheduling when the binary is missing
    plot_path = _check_plot_path(plot, out_dir) if plot is not None else None
    model = model or read_model(model_path)
    graph = model.graph
    if not 1 <= num_segments <= graph.num_ops:
        raise RespectPassError(f"number of segments must be between 1 and {graph.num_ops} (the model's ops), got {num_segments}")
    plan = get_scheduler(scheduler)(graph, num_segments, spec, **(scheduler_options or {}))
    interfaces, blobs = build_segments(model, plan.stages, num_segments)
    costs = [stage_cost(graph, seg, spec) for seg in interfaces]
    if plan.stage_ms is None:
        plan = replace(plan, stage_ms=tuple(c.ms for c in costs))
    breakdown = tuple(c.as_json() for c in costs)
    report = None
    if verify:
        report = verify_segments(model.data, blobs)
        if not report.ok:
            raise VerificationError(list(report.mismatches))
        log.info("verified: %d boundary tensors bit-exact over %d trials", report.tensors_checked, report.trials)
    stem = model.path.stem
    names = [segment_file_name(stem, i, num_segments) for i in range(num_segments)]
    doc = plan_json(plan, graph, interfaces, names, str(model.path.resolve()))
    files = dict(zip(names, blobs))
    compiled = compile_segments(files, progress=progress) if compile else []
    _add_compiled(doc, files, compiled)
    plan_name = plan_file_name(stem)
    files[plan_name] = (json.dumps(doc, indent=2) + "\n").encode()
    png = None
    if plot_path is not None:
        png = stage_plot_png(breakdown, f"{stem}: {num_segments} segments, {plan.scheduler} scheduler "
                             f"(predicted, {spec.name} spec)", spec.cache_bytes)
    written = dict(zip(files, write_files(out_dir, files)))
    if plot_path is not None and png is not None:
        write_files(plot_path.parent, {plot_path.name: png})
    return PartitionResult(plan, tuple(written[n] for n in names), written[plan_name], doc, report,
                           tuple(written[c.file] for c in compiled), breakdown, plot_path)


def _check_plot_path(plot: str | Path, out_dir: str | Path) -> Path:
    """The plot's path; its directory must exist already (or be the output directory)."""
    path = Path(plot)
    if path.suffix.lower() != ".png":
        raise OutputError(str(path), "the plot must be a .png file")
    if path.is_dir() or not (path.parent.is_dir() or path.parent.resolve() == Path(out_dir).resolve()):
        raise OutputError(str(path), "its directory does not exist" if not path.is_dir() else "is a directory")
    return path


def _add_compiled(doc: dict[str, Any], files: dict[str, bytes], compiled: list[CompiledSegment]) -> None:
    """Add the compiled files (and their logs) to ``files`` and the parsed logs to the plan document."""
    for seg, done in zip(doc["segments"], compiled):
        files[done.file] = done.data
        if done.log_file:
            files[done.log_file[0]] = done.log_file[1]
        seg["edgetpu_file"] = done.file
        seg["compiler"] = done.log.as_json()
    if compiled:
        doc["compiler_version"] = compiled[0].log.version
