"""``run_pipeline``: find the segment files in a directory and run them as a pipeline of Edge TPUs.

    run_pipeline DIR [--tpus K] [--backend sim|coral] [--runner auto|litert|pycoral] [--devices usb:0,...]
                 [--count N] [--spec usb|pcie|FILE.json] [--json]

``<stem>_plan.json`` in DIR says how many TPUs (K) the plan uses, its S
segments (``<stem>_segment_<i>_of_<S>.tflite``) and which TPUs run each one
(``replicas`` TPUs, the ``devices`` indices, each running the same file; a
request goes to one replica of each segment and results come back in request
order). ``--tpus``, when given, must agree with it; older plans without
``replicas`` run one TPU per segment. Without a plan (segments
``edgetpu_compiler --num_segments`` made) ``--tpus K`` is required and means
K segments, one TPU each.

The ``sim`` backend chains the segments through the LiteRT interpreter and,
when plan.json names the original model, checks that every boundary tensor
and output is bit-identical to the full model (replicas do not change the
numerics); stage times come from the Edge TPU cost model and N requests go
through a discrete-event model of the pipelined runner (queues of size 1
between segments, replicas sharing their stage's queue, a reorder buffer),
beside the device model's predicted period.

The ``coral`` backend runs the compiled ``*_edgetpu.tflite`` segments on the
plan's Edge TPUs (see :mod:`hardware.coral`): through LiteRT and the Edge TPU
runtime (``libedgetpu.so.1``), or Google's pycoral where it is installed (one
TPU per segment only).

A DIR with ``pool.json`` (``respect-pass pool``) runs every model of the pool
together instead (:mod:`respect_pass.run_pool`); ``--tpus`` must then be the
pool's, and ``--spec`` defaults to the one pool.json names.
"""

from __future__ import annotations

import argparse
import json
import math
import re
import sys
from collections.abc import Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

from hardware import SPEC_METAVAR, USB, EdgeTpuSpec, load_spec, stage_costs
from hardware.coral import run_coral
from hardware.cost import StageCost, pipeline_period_ms, shared_link_ms
from hardware.devices import parse_devices, select_devices
from hardware.placement import placed
from hardware.progress import ProgressFactory, no_progress
from hardware.simulate import measure_pipeline
from hardware.terms import cache_bytes, host_bound_seconds
from tflite_io import OpGraph, RespectPassError, TfliteModel, read_model, verify_model_segments, write_files

from .cli import OneLineParser, run_cli, terminal_progress
from .plot import stage_plot_png
from .pool_doc import read_pool

__all__ = [
    "Layout",
    "Pipeline",
    "SegmentSet",
    "find_segments",
    "format_coral",
    "main",
    "open_pipeline",
    "plan_layout",
    "read_plan",
    "run_hardware",
    "run_sim",
]

_SEGMENT_RE = re.compile(r"^(?P<stem>.+)_segment_(?P<i>\d+)_of_(?P<k>\d+)(?P<tpu>_edgetpu)?\.tflite$")


@dataclass(frozen=True)
class SegmentSet:
    """The K segment files of one model in a directory, in stage order."""

    stem: str
    paths: tuple[Path, ...]
    compiled: bool

    @property
    def plan_path(self) -> Path:
        return self.paths[0].parent / f"{self.stem}_plan.json"


def find_segments(directory: str | Path, num_segments: int, compiled: bool = False) -> SegmentSet:
    """Locate ``<stem>_segment_<i>_of_<K>[_edgetpu].tflite`` for i in 0..K-1 in ``directory``."""
    d = Path(directory)
    if not d.is_dir():
        raise RespectPassError(f"{d}: not a directory")
    if num_segments < 1:
        raise RespectPassError(f"--tpus must be at least 1, got {num_segments}")
    found: dict[str, dict[int, Path]] = {}
    other_k: set[int] = set()
    for p in sorted(d.iterdir()):
        m = _SEGMENT_RE.match(p.name)
        if not m or bool(m["tpu"]) != compiled:
            continue
        if int(m["k"]) != num_segments:
            other_k.add(int(m["k"]))
            continue
        found.setdefault(m["stem"], {})[int(m["i"])] = p
    kind = "compiled (_edgetpu) " if compiled else ""
    if not found:
        hint = f"; it holds segments for K = {sorted(other_k)}" if other_k else ""
        raise RespectPassError(f"{d}: no {kind}*_segment_<i>_of_{num_segments}.tflite files{hint}")
    if len(found) > 1:
        raise RespectPassError(f"{d}: segments of several models ({', '.join(sorted(found))}); use one directory per model")
    stem, by_index = next(iter(found.items()))
    missing = sorted(set(range(num_segments)) - set(by_index))
    if missing:
        raise RespectPassError(f"{d}: {stem} is missing segment(s) {missing} of {num_segments}")
    return SegmentSet(stem, tuple(by_index[i] for i in range(num_segments)), compiled)


def read_plan(segments: SegmentSet) -> dict[str, Any] | None:
    """The ``<stem>_plan.json`` beside the segments, or None when there is none."""
    if not segments.plan_path.is_file():
        return None
    return _load_plan(segments.plan_path, len(segments.paths))


def _load_plan(path: Path, num_segments: int | None = None) -> dict[str, Any]:
    """A plan.json, checked to name a model and (when ``num_segments`` is given) to describe that many segments."""
    try:
        plan = json.loads(path.read_text())
        segments = plan["segments"]
        if not isinstance(plan["model"], str) or not isinstance(segments, list):
            raise ValueError("it names no model or no segments")
        if num_segments is not None and len(segments) != num_segments:
            raise ValueError("it does not describe these segments")
        return plan
    except (ValueError, KeyError, TypeError) as exc:
        raise RespectPassError(f"{path}: unreadable plan ({exc})") from None


@dataclass(frozen=True)
class Layout:
    """Which Edge TPUs run each segment: ``tpus`` (K) in all, segment s on the TPU indices ``devices[s]``
    (its replicas, each running the same compiled file)."""

    tpus: int
    devices: tuple[tuple[int, ...], ...]

    @property
    def replicas(self) -> tuple[int, ...]:
        """The number of TPUs of each segment."""
        return tuple(len(d) for d in self.devices)

    @property
    def replicated(self) -> bool:
        """Whether some segment runs on more than one TPU."""
        return any(len(d) > 1 for d in self.devices)

    @classmethod
    def one_per_segment(cls, num_segments: int) -> Layout:
        """Segment i on TPU i, K = the number of segments (no plan.json, or an older one)."""
        return cls(num_segments, tuple((i,) for i in range(num_segments)))


def plan_layout(plan: dict[str, Any], where: str | Path = "plan.json") -> Layout:
    """The TPUs of a plan.json: ``tpus`` and each segment's ``replicas`` and ``devices`` (TPU indices).
    A segment without ``replicas`` runs on one TPU; without ``devices``, on the next free indices in
    plan order; a plan without ``tpus`` uses as many TPUs as its segments' replicas add up to."""
    try:
        devices, following = [], 0
        for seg in plan["segments"]:
            r = seg.get("replicas", 1)
            own = seg.get("devices", list(range(following, following + r)) if _whole(r) else None)
            if not _whole(r) or r < 1 or not isinstance(own, list) or len(own) != r or not all(map(_whole, own)):
                raise ValueError(f"segment {seg.get('index')}: replicas {r!r} and devices {own!r} do not fit")
            devices.append(tuple(own))
            following = max(following, *own) + 1
        flat = [t for d in devices for t in d]
        tpus = plan.get("tpus", len(flat))
        if not _whole(tpus) or len(set(flat)) != len(flat) or not all(0 <= t < tpus for t in flat):
            raise ValueError(f"{tpus!r} TPUs cannot run segments on TPUs {flat}")
        return Layout(tpus, tuple(devices))
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise RespectPassError(f"{where}: unreadable plan ({exc})") from None


def _whole(value: Any) -> bool:
    """A JSON integer (not a boolean)."""
    return isinstance(value, int) and not isinstance(value, bool)


@dataclass(frozen=True)
class Pipeline:
    """The segment files of a directory, their plan.json (if any), and the TPUs that run each segment."""

    segments: SegmentSet
    plan: dict[str, Any] | None
    layout: Layout


def open_pipeline(directory: str | Path, tpus: int | None = None, compiled: bool = False) -> Pipeline:
    """The segments in ``directory`` and their TPUs, from its ``<stem>_plan.json``; ``tpus``, when given,
    must be the plan's K. Without a plan.json (segments ``edgetpu_compiler --num_segments`` wrote),
    ``tpus`` is required and means that many segments, one TPU each."""
    plan_path = _plan_file(directory)
    if plan_path is None:
        if tpus is None:
            raise RespectPassError(f"{directory}: no <stem>_plan.json to say how many TPUs; give --tpus K (K segments)")
        return Pipeline(find_segments(directory, tpus, compiled), None, Layout.one_per_segment(tpus))
    plan = _load_plan(plan_path)
    layout = plan_layout(plan, plan_path)
    if tpus is not None and tpus != layout.tpus:
        raise RespectPassError(
            f"--tpus {tpus}, but {plan_path} plans {layout.tpus} TPU(s) for {len(layout.devices)} segment(s); "
            "leave --tpus out or partition again"
        )
    num_segments = plan.get("num_segments", len(layout.devices))
    if num_segments != len(layout.devices):
        raise RespectPassError(
            f"{plan_path}: unreadable plan (num_segments {num_segments!r} but {len(layout.devices)} segments)"
        )
    segments = find_segments(directory, num_segments, compiled)
    if segments.plan_path != plan_path:
        raise RespectPassError(f"{directory}: {plan_path.name} is not the plan of {segments.stem}'s segments")
    return Pipeline(segments, plan, layout)


def _plan_file(directory: str | Path) -> Path | None:
    """The one ``*_plan.json`` in ``directory`` (None when there is none)."""
    d = Path(directory)
    if not d.is_dir():
        raise RespectPassError(f"{d}: not a directory")
    plans = sorted(d.glob("*_plan.json"))
    if len(plans) > 1:
        raise RespectPassError(
            f"{d}: plans of several models ({', '.join(p.name for p in plans)}); use one directory per model"
        )
    return plans[0] if plans else None


def _layout_of(plan: dict[str, Any] | None, segments: SegmentSet) -> Layout:
    """The plan's TPUs, or one per segment without a plan."""
    return plan_layout(plan, segments.plan_path) if plan is not None else Layout.one_per_segment(len(segments.paths))


def run_hardware(
    segments: SegmentSet,
    count: int = 100,
    warmup: int = 10,
    runner: str = "auto",
    devices: Sequence[str] | None = None,
    progress: ProgressFactory = no_progress,
) -> dict[str, Any]:
    """Run compiled segments on the plan's Edge TPUs and add what plan.json knows of each segment (if there
    is one: segments ``edgetpu_compiler --num_segments`` wrote have none). ``devices``: one per TPU in plan
    order (segment 0's replicas first); default: the TPUs found, numbered as plan.json's ``devices``."""
    plan = read_plan(segments)
    layout = _layout_of(plan, segments)
    planned = plan is not None and any("replicas" in seg for seg in plan["segments"])
    replicas = list(layout.replicas) if planned else None
    report = run_coral(
        segments.paths,
        count=count,
        warmup=warmup,
        runner=runner,
        devices=_coral_devices(layout, devices, planned),
        progress=progress,
        replicas=replicas,
    )
    report["tpus"] = layout.tpus
    for stage in report["stages"]:
        seg = plan["segments"][stage["index"]] if plan else {}
        compiled = seg.get("compiler") or {}
        stage.setdefault("replicas", layout.replicas[stage["index"]])
        stage.setdefault("devices", [report["devices"][stage["index"]]])
        stage.update(
            param_bytes=seg.get("param_bytes"),
            on_chip_bytes=compiled.get("on_chip_bytes"),
            off_chip_bytes=compiled.get("off_chip_bytes"),
        )
    return report


def _coral_devices(layout: Layout, devices: Sequence[str] | None, planned: bool) -> list[str] | None:
    """The device string of each TPU in plan order for :func:`run_coral`: the user's list (one per TPU),
    or the TPUs found, the plan's TPU i on the i-th (None when that is the order run_coral picks itself)."""
    flat = [t for d in layout.devices for t in d]
    if devices is not None:
        if planned and len(devices) != len(flat):
            raise RespectPassError(
                f"--devices names {len(devices)} Edge TPU(s) but the plan runs {len(layout.devices)} segment(s) on "
                f"{len(flat)} TPUs (replicas {'+'.join(map(str, layout.replicas))}); name one per TPU, in plan "
                "order (segment 0's replicas first)"
            )
        return list(devices)
    if flat == list(range(len(flat))):
        return None
    found = select_devices(max(flat) + 1)
    return [found[t] for t in flat]


def run_sim(segments: SegmentSet, spec: EdgeTpuSpec = USB, count: int = 100) -> dict[str, Any]:
    """Chain the segments through LiteRT, verify against the plan's model when it is available,
    and simulate ``count`` requests through the pipeline (on the plan's TPUs) with cost-model stage times."""
    from .partition import planning_spec

    spec = planning_spec(spec)
    models = [read_model(p) for p in segments.paths]
    plan = read_plan(segments)
    layout = _layout_of(plan, segments)
    planned = _plan_model(segments, plan)
    verified, stopped_before = _verify(planned, [m.data for m in models])
    costs = _stage_costs(planned, plan, models, spec)
    records = [
        {**replace(c, index=i).as_json(), "replicas": len(d), "devices": list(d), "file": str(p)}
        for i, (c, d, p) in enumerate(zip(costs, layout.devices, segments.paths))
    ]
    # the shared host link and the host's cores bound the period as in the device model
    host_ms = host_bound_seconds(spec, sum(c.host_s for c in costs)) * 1e3
    replicas = layout.replicas if layout.replicated else None
    figures = measure_pipeline(
        [c.ms for c in costs], count=count, min_period_ms=max(shared_link_ms(costs, spec), host_ms), replicas=replicas
    )
    return {
        "backend": "sim",
        "spec": spec.name,
        "tpus": layout.tpus,
        "num_segments": len(models),
        "count": count,
        **asdict(figures),
        "predicted_period_ms": pipeline_period_ms(costs, spec, replicas),
        "prediction_error": spec.prediction_error,
        "error_line": spec.error_line(),
        "verified": verified,
        "verified_up_to": list(stopped_before),
        "stages": records,
    }


def _plan_host_times(plan: dict[str, Any] | None) -> dict[int, float]:
    """The host op times plan.json recorded (model op -> seconds); none without a plan or the key. A value
    that is not an op index and a positive number of seconds is one error line."""
    times = plan.get("host_times") if plan is not None else None
    if times is None:
        return {}
    try:
        out = {int(v): float(t) for v, t in times.items()}
        bad = any(v < 0 or not 0 < t < math.inf for v, t in out.items())
    except (AttributeError, TypeError, ValueError):
        bad = True
    if bad:
        raise RespectPassError(f"plan.json: host_times must map op indices to positive seconds, got {times!r:.80}")
    return out


def _with_plan_host_times(graph: OpGraph, times: dict[int, float], model_ops: list[int] | None) -> OpGraph:
    """``graph`` with the host op times of plan.json (``times``, by the model's op index), its ops being
    ``model_ops`` of the model in order (None: the model itself); as it is where they do not line up."""
    if model_ops is not None and len(model_ops) != graph.num_ops:
        return graph
    ops = model_ops if model_ops is not None else list(range(graph.num_ops))
    mine = sorted((j, times[v]) for j, v in enumerate(ops) if v in times and j in graph.host_ops)
    return replace(graph, host_times=tuple(mine)) if mine else graph


def _segment_ops(plan: dict[str, Any] | None, index: int) -> list[int] | None:
    """The model ops of segment ``index`` as plan.json lists them; None where it does not."""
    try:
        return [int(v) for v in plan["segments"][index]["ops"]] if plan is not None else None
    except (KeyError, IndexError, TypeError, ValueError):
        return None


@dataclass(frozen=True)
class _PlanModel:
    """The model plan.json names, read as it was planned, and the plan's stage map over its ops."""

    model: TfliteModel
    stages: tuple[int, ...]


def _plan_model(segments: SegmentSet, plan: dict[str, Any] | None) -> _PlanModel | None:
    """The plan's model and stage map, or None without a plan or where its model is not there."""
    if plan is None or not Path(plan["model"]).is_file():
        return None
    model = read_model(Path(plan["model"]), fix_batch=bool(plan.get("fixed_batch")))
    stages = [0] * model.graph.num_ops
    try:
        for seg in plan["segments"]:
            for v in seg["ops"]:
                stages[v] = seg["index"]
    except (KeyError, TypeError, IndexError) as exc:
        raise RespectPassError(f"{segments.plan_path}: unreadable plan ({exc})") from None
    return _PlanModel(model, tuple(stages))


def _verify(planned: _PlanModel | None, blobs: list[bytes]) -> tuple[bool | None, tuple[str, ...]]:
    """Chain the segments against the model plan.json names, if it is there: (bit-exact, boundaries verified up
    to); (None, ()) when there is no model to compare with. Raises when they differ."""
    if planned is None:
        return None, ()
    report = verify_model_segments(planned.model, list(planned.stages), blobs)
    if not report.ok:
        raise RespectPassError(f"segments are not bit-exact with {planned.model.path}: {report.mismatches[0]}")
    return report.ok, report.stopped_before


def _stage_costs(
    planned: _PlanModel | None, plan: dict[str, Any] | None, models: list[TfliteModel], spec: EdgeTpuSpec
) -> list[StageCost]:
    """Each segment's predicted cost. With the plan's model: the plan's own costing (the model placed as a
    whole, its stage map, the host op times plan.json recorded), so plan, simulation and plot agree. Without:
    each segment file placed and costed on its own (its host ops by the table or the times plan.json gives)."""
    times = _plan_host_times(plan)
    if planned is not None and len(models) == max(planned.stages) + 1:
        graph = _with_plan_host_times(placed(planned.model.graph), times, None)
        return list(stage_costs(graph, planned.stages, len(models), spec))
    graphs = [_with_plan_host_times(placed(m.graph), times, _segment_ops(plan, i)) for i, m in enumerate(models)]
    return [stage_costs(g, (0,) * g.num_ops, 1, spec)[0] for g in graphs]


def _body(argv: Sequence[str]) -> int:
    """Parse ``argv``, run the segments on the chosen backend, draw the plot if asked, print the report."""
    args = _parser().parse_args(argv)
    if args.count < 1:
        raise RespectPassError(f"--count must be at least 1, got {args.count}")
    pool = read_pool(args.dir) if Path(args.dir).is_dir() else None
    if pool is not None:  # a directory respect-pass pool wrote: every model together
        from .run_pool import format_pool, run_pool

        report = run_pool(args, *pool, progress=terminal_progress)
        print(json.dumps(report, indent=2) if args.json else format_pool(report))
        return 0
    plot = _check_plot(args.plot) if args.plot else None
    report = _run(args)
    if plot is not None:
        _write_plot(plot, report, args)
    if args.json:
        print(json.dumps(report, indent=2))
    elif args.backend == "coral":
        print(format_coral(report))
    else:
        print(_format_sim(report))
    return 0


def _parser() -> OneLineParser:
    """The ``run_pipeline`` command line."""
    p = OneLineParser(prog="run_pipeline", description="Run segment files as a pipeline of Edge TPUs.")
    p.add_argument(
        "dir",
        metavar="DIR",
        help="directory holding <stem>_segment_<i>_of_<S>.tflite and <stem>_plan.json, or a pool (pool.json)",
    )
    p.add_argument(
        "--tpus",
        type=int,
        default=None,
        metavar="K",
        help="number of Edge TPUs: plan.json's (checked when given); required without plan.json (K segments, one TPU each)",
    )
    p.add_argument(
        "--backend",
        choices=["sim", "coral"],
        default="sim",
        help="sim: LiteRT chaining and the cost model (default); coral: the plan's Edge TPUs (Edge TPU runtime)",
    )
    p.add_argument(
        "--runner",
        choices=["auto", "litert", "pycoral"],
        default="auto",
        help="coral: LiteRT + libedgetpu threads (litert), Google's PipelinedModelRunner (pycoral), "
        "or pycoral when it is importable (auto)",
    )
    p.add_argument(
        "--devices",
        default=None,
        metavar="usb:0,usb:1,pci:0",
        help="coral: one Edge TPU per TPU of the plan, in plan order (segment 0's replicas first); "
        "default: the TPUs found, numbered as plan.json's devices",
    )
    p.add_argument(
        "--count",
        type=int,
        default=100,
        metavar="N",
        help="requests pushed through the pipeline (default 100; a pool: in all, at least 200 of each model simulated)",
    )
    p.add_argument("--warmup", type=int, default=10, metavar="N", help="warm-up requests before timing (coral)")
    p.add_argument(
        "--spec",
        default=None,
        metavar=SPEC_METAVAR,
        help="Edge TPU cost-model constants (sim; default usb, for a pool the spec pool.json names)",
    )
    p.add_argument("--plot", metavar="FILE.png", help="draw the per-stage time and parameter breakdown")
    p.add_argument("--json", action="store_true", help="print JSON")
    return p


def _run(args: argparse.Namespace) -> dict[str, Any]:
    """The report of the segments run on Edge TPUs (coral) or chained in LiteRT and simulated (sim)."""
    if args.backend == "coral":
        devices = parse_devices(args.devices) if args.devices else None
        return run_hardware(
            open_pipeline(args.dir, args.tpus, compiled=True).segments,
            args.count,
            max(args.warmup, 0),
            args.runner,
            devices,
            terminal_progress,
        )
    if args.devices is not None or args.runner != "auto":
        raise RespectPassError("--runner and --devices apply to --backend coral only")
    return run_sim(open_pipeline(args.dir, args.tpus).segments, load_spec(args.spec or "usb"), args.count)


def _write_plot(plot: Path, report: dict[str, Any], args: argparse.Namespace) -> None:
    """Draw the per-stage chart of ``report`` (with the spec's cache size when simulated) to ``plot``."""
    cache = cache_bytes(load_spec(args.spec or "usb")) if args.backend == "sim" else None
    tpus = _in_flight(report)
    on = f" on {tpus} TPUs" if tpus != report["num_segments"] else ""
    title = f"{report['num_segments']} segments{on}, " + (
        f"simulated ({report['spec']} spec)" if args.backend == "sim" else "measured on Edge TPUs"
    )
    write_files(plot.parent, {plot.name: stage_plot_png(report["stages"], title, cache)})


def _format_sim(report: dict[str, Any]) -> str:
    """The table of a simulated run: each segment's predicted times (columns that add up to ``ms``) and bytes,
    a legend, the figures, what was verified."""
    rows = [
        f"{'seg':>3}  {'tpus':<8}  {'ms':>8}  {'= invoke':>8}  {'+ tpu':>8}  {'+ host':>8}  {'+ stream':>8}  "
        f"{'+ io':>8}  {'params MiB':>10}  {'streamed':>8}  file"
    ]
    for s in report["stages"]:
        tpus = ",".join(map(str, s["devices"]))
        rows.append(
            f"{s['index']:>3}  {tpus:<8}  {s['ms']:>8.3f}  {s['overhead_ms']:>8.3f}  {s['compute_ms']:>8.3f}  "
            f"{s['host_ms']:>8.3f}  {s['stream_ms']:>8.3f}  {s['io_ms']:>8.3f}  {s['param_bytes'] / 2**20:>10.3f}  "
            f"{s['off_chip_bytes'] / 2**20:>8.3f}  {s['file']}"
        )
    rows.append(
        "ms = invoke (the runtime's call) + tpu (Edge TPU compute) + host (CPU ops, with their hand-off over the "
        "link) + stream (parameters not cached, every request) + io (activations in and out over the host link); "
        "params: the device layout, MiB; streamed: the part of it not cached"
    )
    rows.append(f"simulated ({report['spec']} spec, {report['tpus']} TPUs): {figures_line(report)}")
    rows.append(
        f"predicted period {report['predicted_period_ms']:.3f} ms (device model: the slowest segment per TPU, "
        "the shared host link, the host's cores)"
    )
    rows.append(report["error_line"])
    verified, upto = report["verified"], report["verified_up_to"]
    rows.append(
        "verified: "
        + (
            "not checked (no plan.json naming the model)"
            if not verified
            else "bit-exact with the full model"
            if not upto
            else f"bit-exact up to {', '.join(upto)} (no LiteRT kernel; wiring checked by tensor name)"
        )
    )
    return "\n".join(rows)


def _check_plot(name: str) -> Path:
    path = Path(name)
    if path.suffix.lower() != ".png" or not path.parent.is_dir():
        raise RespectPassError(f"{path}: the plot must be a .png file in an existing directory")
    return path


def _num(value: Any) -> str:
    return "-" if value is None else f"{value:,}"


def figures_line(report: dict[str, Any]) -> str:
    """Period, throughput and the latency of one request alone first; the latency with the pipeline full said
    to include waiting in the queues (it is not a slower pipeline)."""
    return (
        f"period {report['bottleneck_ms']:.3f} ms ({report['throughput_ips']:.1f} inferences/s), "
        f"latency {report['latency_ms']:.3f} ms for one request alone; with {_in_flight(report)} requests in "
        f"flight ({report['count']} requests) each waits its turn too: p50 {report['latency_loaded_p50_ms']:.2f} ms, "
        f"p99 {report['latency_loaded_p99_ms']:.2f} ms"
    )


def _in_flight(report: dict[str, Any]) -> int:
    """The TPUs the pipeline ran on (the segments' replicas added up): the requests kept in flight under load."""
    return sum(s.get("replicas", 1) for s in report["stages"])


def format_coral(report: dict[str, Any]) -> str:
    """The table of a coral (real Edge TPU) run: each segment alone and in the pipeline, then the figures."""
    rows = [
        f"{'seg':>3}  {'alone ms':>8}  {'pipe ms':>8}  {'params B':>11}  {'cached B':>11}  {'off-chip B':>11}  "
        f"{'devices':<6}  file"
    ]
    for i, s in enumerate(report["stages"]):
        pipe = "-" if s["ms_in_pipeline"] is None else f"{s['ms_in_pipeline']:.3f}"
        devices = ",".join(s.get("devices") or [report["devices"][i]])
        rows.append(
            f"{s['index']:>3}  {s['ms']:>8.3f}  {pipe:>8}  {_num(s.get('param_bytes')):>11}  "
            f"{_num(s.get('on_chip_bytes')):>11}  {_num(s.get('off_chip_bytes')):>11}  {devices:<6}  {s['file']}"
        )
    rows.append(f"measured on {_in_flight(report)} Edge TPU(s) ({report['runner']} runner): {figures_line(report)}")
    return "\n".join(rows)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``run_pipeline`` console script."""
    return run_cli("run_pipeline", _body, list(sys.argv[1:] if argv is None else argv))


if __name__ == "__main__":
    sys.exit(main())
