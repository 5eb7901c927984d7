"""The library entry point behind ``respect-pass MODEL -n K -o DIR``."""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from hardware import USB, CompiledSegment, EdgeTpuSpec, StageCost, compile_segments, op_seconds, stage_cost
from hardware.calibrate import Device
from hardware.compiler import find_compiler
from hardware.cost import pipeline_period_ms, shared_link_ms
from hardware.host_time import localized, with_host_times
from hardware.placement import place_ops, placed
from hardware.progress import ProgressFactory, no_progress
from hardware.terms import cache_bytes
from tflite_io import (
    OpGraph,
    RespectPassError,
    SegmentInterface,
    TfliteModel,
    UnsupportedModelError,
    VerificationError,
    VerifyReport,
    build_segments,
    max_stages,
    read_model,
    segment_file_name,
    stale_segment_files,
    verify_model_segments,
    write_files,
)

from .plan import Plan, plan_json
from .plot import check_plot_path, stage_plot_png
from .refine_device import Refinement, refine_on_device
from .replicas import check_tpus, pipeline_stages, replicable, with_replicas
from .schedulers import get_scheduler

__all__ = ["PartitionResult", "load_model", "partition", "plan_file_name"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class PartitionResult:
    """What one partition run produced: the plan, the written files, the plan document."""

    plan: Plan
    segment_paths: tuple[Path, ...]
    plan_path: Path
    plan_doc: dict[str, Any]
    verify: VerifyReport | None
    graph: OpGraph  # the model's graph, as scheduled
    compiled_paths: tuple[Path, ...] = ()
    stage_breakdown: tuple[dict[str, Any], ...] = ()
    plot_path: Path | None = None
    spec: EdgeTpuSpec = USB  # the device model that predicted the plan (refitted after --refine-on-device)


#: The reference workload host speeds are measured on (:attr:`hardware.EdgeTpuSpec.host_ref_ms`): the embedded model.
REFERENCE_MODEL = Path(__file__).resolve().parent / "data" / "mobilenet_v2_0.35_96_int8.tflite"


def planning_spec(spec: EdgeTpuSpec) -> EdgeTpuSpec:
    """``spec`` with its host's speed for host ops relative to this machine (:func:`hardware.host_time.localized`)."""
    return localized(spec, REFERENCE_MODEL)


def plan_file_name(stem: str) -> str:
    return f"{stem}_plan.json"


_FLOAT = frozenset({"float32", "float16", "float64", "bfloat16"})


def load_model(path: str | Path, fix_batch: bool = False, host_time: str = "measured") -> TfliteModel:
    """Read a model and place its ops as edgetpu_compiler would (``graph.host_ops`` = the CPU ops), its host
    ops timed by LiteRT on this machine (``host_time`` "measured", cached; :mod:`hardware.host_time`) or left
    to the device model's table ("table").

    Raises :class:`UnsupportedModelError` when no op would map to the Edge TPU, with advice that fits:
    a float model needs full-integer quantization; otherwise the first op's reason is given.
    """
    model = read_model(path, fix_batch)
    graph = placed(model.graph)
    if not graph.tpu_ops:
        shown = str(model.path)
        floats = [
            (op, t)
            for op in graph.ops
            for t in op.inputs + op.outputs
            if t >= 0 and graph.tensors[t].dtype in _FLOAT and not graph.tensors[t].is_constant
        ]
        if floats:
            op, t = floats[0]
            raise UnsupportedModelError(
                shown,
                f"no op maps to the Edge TPU: the model computes in float (op {op.index} ({op.label}) uses "
                f"{graph.tensors[t].dtype} tensor '{graph.tensors[t].name[:60]}'); convert it with full-integer "
                "quantization (int8, with a representative dataset)",
            )
        first = place_ops(graph)[0]
        raise UnsupportedModelError(shown, f"no op maps to the Edge TPU (op 0, {graph.ops[0].label}: {first.reason})")
    if log.isEnabledFor(logging.INFO):  # placing again only to say why
        for where in place_ops(graph):
            if where.device == "cpu":
                log.info("op %d (%s) runs on the CPU: %s", where.index, graph.ops[where.index].label, where.reason)
    graph = with_host_times(model.path, graph, host_time)
    return replace(model, graph=graph)


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
    fix_batch: bool = False,
    refine_rounds: int = 0,
    device: Device | None = None,
    replicas: bool = True,
    host_time: str = "measured",
) -> PartitionResult:
    """Schedule ``model_path`` onto ``num_segments`` Edge TPUs and write the segment files.

    With ``replicas`` (the default) the plan may use fewer segments than TPUs, some segments running on
    several TPUs (:mod:`respect_pass.replicas`; not for the ``compiler`` split, the memory objective or
    ``--refine-on-device``); without, one segment per TPU for pycoral's ``PipelinedModelRunner``.

    Segments and ``<stem>_plan.json`` are built in memory, optionally checked
    bit-exact against the full model, and written all or nothing. Stage times
    in the plan are predicted by the cost model with ``spec``. Raises a
    :class:`RespectPassError` subclass for every user error; the input model is
    only read. With ``compile``, every segment is also compiled by
    ``edgetpu_compiler`` before anything is written, and a failed compile or
    an op left on the CPU writes nothing. ``plot`` names a PNG of the
    predicted per-stage breakdown, rendered before anything is written.
    ``fix_batch`` sets a dynamic batch dimension to 1 in the segments. ``host_time``: host ops timed by
    LiteRT on this machine ("measured") or costed by the device model's table ("table").
    ``refine_rounds`` > 0 measures each plan on ``device`` and reschedules from
    the refitted model (:mod:`respect_pass.refine_device`); the plan with the best
    measured period is written, predicted with the last refitted spec.
    """
    if compile:
        find_compiler()  # fail before scheduling when the binary is missing
    spec = planning_spec(spec)
    log.info("device model %s (host ops x%.3g of this machine's time)", spec.name, spec.host_op_scale)
    plot_path = check_plot_path(plot, out_dir) if plot is not None else None
    model = model or load_model(model_path, fix_batch, host_time)
    graph = model.graph
    log.info(
        "%s: %d ops, %d on the CPU (%d timed by LiteRT)",
        model.path.name,
        graph.num_ops,
        len(graph.host_ops),
        len(graph.host_times),
    )
    replicate = replicas and replicable(scheduler, scheduler_options, refine_rounds)
    if replicate:
        check_tpus(num_segments)
    stages = pipeline_stages(model.graph, num_segments) if replicate else num_segments
    _check_num_segments(model.graph, stages)
    scheduled = _schedule(model, stages, spec, scheduler, scheduler_options, refine_rounds, device)
    log.info("%s scheduler: %d stages in %.3f s", scheduler, scheduled.plan.num_stages, scheduled.plan.solve_seconds)
    scheduled = _with_replicas(model, scheduled, num_segments) if replicate else scheduled
    if replicate:
        log.info("replicas on %d TPUs: %s TPUs per segment", num_segments, "+".join(map(str, scheduled.plan.stage_replicas)))
    built = _build_and_predict(model, scheduled.plan, scheduled.plan.num_stages, scheduled.spec)
    log.info(
        "built %d segment files (%s)",
        len(built.names),
        ", ".join(f"{ms:.3f}" for ms in built.plan.stage_ms or ()) + " ms predicted",
    )
    report = _verify(model, built) if verify else None
    doc = _plan_document(model, built, scheduled, device)
    files = _files_to_write(model, built, doc, compile, progress)
    png = _plot_png(model, built, scheduled.spec) if plot_path is not None else None
    stale = stale_segment_files(out_dir, model.path.stem, scheduled.plan.num_stages)
    written = dict(zip(files.contents, write_files(out_dir, files.contents, remove=stale)))
    if stale:
        log.warning("removed %d file(s) of a plan with another number of segments from %s", len(stale), out_dir)
    if plot_path is not None and png is not None:
        write_files(plot_path.parent, {plot_path.name: png})
    log.info("wrote %d files to %s", len(written), out_dir)
    return PartitionResult(
        built.plan,
        tuple(written[n] for n in built.names),
        written[files.plan_name],
        doc,
        report,
        model.graph,
        tuple(written[c.file] for c in files.compiled),
        built.breakdown,
        plot_path,
        scheduled.spec,
    )


def _with_replicas(model: TfliteModel, scheduled: _Scheduled, tpus: int) -> _Scheduled:
    """The scheduled pipeline as segments with replicas on ``tpus`` TPUs (:func:`respect_pass.replicas.with_replicas`)."""
    return replace(scheduled, plan=with_replicas(model.graph, scheduled.plan, tpus, scheduled.spec))


def _check_num_segments(graph: OpGraph, num_segments: int) -> None:
    """Refuse a K outside 1..max_stages(graph), saying what limits it."""
    largest = max_stages(graph)
    if not 1 <= num_segments <= largest:
        why = (
            "the model's ops"
            if largest == graph.num_ops
            else f"the largest K that works: of the {graph.num_ops} ops, {len(graph.last_stage_ops)} go with the "
            "last segment" + (f" and {len(graph.first_stage_ops)} with the first" if graph.first_stage_ops else "")
        )
        raise RespectPassError(f"number of segments must be between 1 and {largest} ({why}), got {num_segments}")


@dataclass(frozen=True)
class _Scheduled:
    """The plan chosen, the spec that predicts it, and the device refinement when there was one."""

    plan: Plan
    spec: EdgeTpuSpec
    refinement: Refinement | None


def _schedule(
    model: TfliteModel,
    num_segments: int,
    spec: EdgeTpuSpec,
    scheduler: str,
    scheduler_options: dict[str, Any] | None,
    refine_rounds: int,
    device: Device | None,
) -> _Scheduled:
    """Run the scheduler, or refine on the device (the best measured plan and the last refitted spec)."""
    if not refine_rounds:
        plan = get_scheduler(scheduler)(model.graph, num_segments, spec, **(scheduler_options or {}))
        return _Scheduled(plan, spec, None)
    if device is None:
        raise RespectPassError("refining on a device needs a device")
    refinement = refine_on_device(model, num_segments, spec, device, refine_rounds, scheduler, scheduler_options)
    return _Scheduled(refinement.plan, refinement.spec, refinement)


@dataclass(frozen=True)
class _Built:
    """The segments in memory and their predicted costs; ``plan`` carries the predicted stage and link times."""

    plan: Plan
    interfaces: tuple[SegmentInterface, ...]
    blobs: tuple[bytes, ...]
    costs: tuple[StageCost, ...]
    names: tuple[str, ...]
    breakdown: tuple[dict[str, Any], ...]


def _build_and_predict(model: TfliteModel, plan: Plan, num_segments: int, spec: EdgeTpuSpec) -> _Built:
    """Build one submodel per stage and predict each stage's time with ``spec``."""
    graph = model.graph
    interfaces, blobs = build_segments(model, plan.stages, num_segments)
    op_s = op_seconds(graph, spec)
    costs = tuple(stage_cost(graph, seg, spec, op_s) for seg in interfaces)
    plan = replace(
        plan,
        stage_ms=tuple(c.ms for c in costs),
        link_ms=shared_link_ms(costs, spec),
        period_ms=pipeline_period_ms(costs, spec, plan.stage_replicas),
    )
    names = tuple(segment_file_name(model.path.stem, i, num_segments) for i in range(num_segments))
    return _Built(plan, interfaces, tuple(blobs), costs, names, tuple(c.as_json() for c in costs))


def _verify(model: TfliteModel, built: _Built) -> VerifyReport:
    """Chain the segments in LiteRT against the full model; refuse any boundary that is not bit-exact."""
    report = verify_model_segments(model, built.plan.stages, built.blobs)
    if not report.ok:
        raise VerificationError(list(report.mismatches))
    log.info("verified: %d boundary tensors bit-exact over %d trials", report.tensors_checked, report.trials)
    return report


def _plan_document(model: TfliteModel, built: _Built, scheduled: _Scheduled, device: Device | None) -> dict[str, Any]:
    """The plan.json document: the plan, the fixed batch, and the device rounds when there were any."""
    doc = plan_json(built.plan, model.graph, built.interfaces, list(built.names), str(model.path.resolve()), built.costs)
    if model.fixed_batch:
        doc["fixed_batch"] = list(model.fixed_batch)
    doc["spec"] = scheduled.spec.name
    doc["prediction_error"] = scheduled.spec.prediction_error
    doc["host_times"] = {str(v): s for v, s in model.graph.host_times}  # measured host ops (s); the rest: the table
    refinement = scheduled.refinement
    if refinement is not None and device is not None:
        doc["device_refinement"] = {
            "backend": device.name,
            "device_runs": refinement.device_runs,
            "rounds": list(refinement.rounds),
            "spec": json.loads(scheduled.spec.to_json()),
        }
    return doc


@dataclass(frozen=True)
class _Files:
    """Every file to write by name (segments, compiled segments and logs, plan.json), and the compiled ones."""

    contents: dict[str, bytes]
    plan_name: str
    compiled: tuple[CompiledSegment, ...]


def _files_to_write(
    model: TfliteModel, built: _Built, doc: dict[str, Any], compile: bool, progress: ProgressFactory
) -> _Files:
    """Compile the segments when asked (adding the results to ``doc``), then serialise ``doc`` last."""
    files = dict(zip(built.names, built.blobs))
    expected_cpu = {name: len(c.cpu_ops) for name, c in zip(built.names, built.costs)}
    compiled = compile_segments(files, progress=progress, expected_cpu_ops=expected_cpu) if compile else []
    _add_compiled(doc, files, compiled)
    plan_name = plan_file_name(model.path.stem)
    files[plan_name] = (json.dumps(doc, indent=2) + "\n").encode()
    return _Files(files, plan_name, tuple(compiled))


def _plot_png(model: TfliteModel, built: _Built, spec: EdgeTpuSpec) -> bytes:
    """The predicted per-stage chart, rendered in memory."""
    return stage_plot_png(
        built.breakdown,
        f"{model.path.stem}: {len(built.names)} segments, {built.plan.scheduler} scheduler (predicted, {spec.name} spec)",
        cache_bytes(spec),
    )


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
