"""``run_pipeline``: find the K segment files in a directory and run them as a pipeline.

    run_pipeline --tpus K DIR [--backend sim|coral] [--runner auto|litert|pycoral] [--devices usb:0,...]
                 [--count N] [--spec usb|pcie|FILE.json] [--json]

The ``sim`` backend chains the segments through the LiteRT interpreter and,
when ``<stem>_plan.json`` names the original model, checks that every
boundary tensor and output is bit-identical to the full model; stage times
come from the Edge TPU cost model and N requests go through a discrete-event
model of PipelinedModelRunner (queues of size 1 between segments).

The ``coral`` backend runs the compiled ``*_edgetpu.tflite`` segments on K
Edge TPUs (see :mod:`hardware.coral`): through LiteRT and the Edge TPU runtime
(``libedgetpu.so.1``), or Google's pycoral where it is installed. Segments
``edgetpu_compiler --num_segments`` made (no plan.json) run as well.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from collections.abc import Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

from hardware import USB, EdgeTpuSpec, load_spec, stage_costs
from hardware.coral import run_coral
from hardware.cost import shared_link_ms
from hardware.devices import parse_devices
from hardware.placement import placed
from hardware.progress import ProgressFactory, no_progress
from hardware.simulate import measure_pipeline
from hardware.terms import cache_bytes
from tflite_io import RespectPassError, read_model, verify_model_segments, write_files

from .cli import OneLineParser, run_cli, terminal_progress
from .plot import stage_plot_png

__all__ = ["SegmentSet", "find_segments", "read_plan", "run_sim", "run_hardware", "format_coral", "main"]

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
    try:
        plan = json.loads(segments.plan_path.read_text())
        if not isinstance(plan["model"], str) or len(plan["segments"]) != len(segments.paths):
            raise ValueError("it does not describe these segments")
        return plan
    except (ValueError, KeyError, TypeError) as exc:
        raise RespectPassError(f"{segments.plan_path}: unreadable plan ({exc})") from None


def run_hardware(
    segments: SegmentSet,
    count: int = 100,
    warmup: int = 10,
    runner: str = "auto",
    devices: Sequence[str] | None = None,
    progress: ProgressFactory = no_progress,
) -> dict[str, Any]:
    """Run compiled segments on Edge TPUs and add what plan.json knows of each segment (if there is one:
    segments ``edgetpu_compiler --num_segments`` wrote have none)."""
    report = run_coral(segments.paths, count=count, warmup=warmup, runner=runner, devices=devices, progress=progress)
    plan = read_plan(segments)
    for stage in report["stages"]:
        seg = plan["segments"][stage["index"]] if plan else {}
        compiled = seg.get("compiler") or {}
        stage.update(
            param_bytes=seg.get("param_bytes"),
            on_chip_bytes=compiled.get("on_chip_bytes"),
            off_chip_bytes=compiled.get("off_chip_bytes"),
        )
    return report


def run_sim(segments: SegmentSet, spec: EdgeTpuSpec = USB, count: int = 100) -> dict[str, Any]:
    """Chain the segments through LiteRT, verify against the plan's model when it is available,
    and simulate ``count`` requests through the pipeline with cost-model stage times."""
    models = [read_model(p) for p in segments.paths]
    verified: bool | None = None
    stopped_before: tuple[str, ...] = ()
    plan = read_plan(segments)
    if plan is not None:
        source = Path(plan["model"])
        if source.is_file():
            model = read_model(source, fix_batch=bool(plan.get("fixed_batch")))
            stages = [0] * model.graph.num_ops
            try:
                for seg in plan["segments"]:
                    for v in seg["ops"]:
                        stages[v] = seg["index"]
            except (KeyError, TypeError, IndexError) as exc:
                raise RespectPassError(f"{segments.plan_path}: unreadable plan ({exc})") from None
            report = verify_model_segments(model, stages, [m.data for m in models])
            verified, stopped_before = report.ok, report.stopped_before
            if not report.ok:
                raise RespectPassError(f"segments are not bit-exact with {source}: {report.mismatches[0]}")
    # each segment is compiled on its own, so its ops are placed on its own
    costs = [stage_costs(g, (0,) * g.num_ops, 1, spec)[0] for g in (placed(m.graph) for m in models)]
    records = [{**replace(c, index=i).as_json(), "file": str(p)} for i, (c, p) in enumerate(zip(costs, segments.paths))]
    figures = measure_pipeline([c.ms for c in costs], count=count, min_period_ms=shared_link_ms(costs, spec))
    return {
        "backend": "sim",
        "spec": spec.name,
        "num_segments": len(models),
        "count": count,
        **asdict(figures),
        "verified": verified,
        "verified_up_to": list(stopped_before),
        "stages": records,
    }


def _body(argv: Sequence[str]) -> int:
    """Parse ``argv``, run the segments on the chosen backend, draw the plot if asked, print the report."""
    args = _parser().parse_args(argv)
    if args.count < 1:
        raise RespectPassError(f"--count must be at least 1, got {args.count}")
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
    p = OneLineParser(prog="run_pipeline", description="Run K segment files as an Edge TPU pipeline.")
    p.add_argument("dir", metavar="DIR", help="directory holding <stem>_segment_<i>_of_<K>.tflite")
    p.add_argument("--tpus", type=int, required=True, metavar="K", help="number of segments / Edge TPUs")
    p.add_argument(
        "--backend",
        choices=["sim", "coral"],
        default="sim",
        help="sim: LiteRT chaining and the cost model (default); coral: K Edge TPUs (Edge TPU runtime)",
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
        help="coral: the Edge TPU of each segment, in order (default: as enumerated)",
    )
    p.add_argument("--count", type=int, default=100, metavar="N", help="requests pushed through the pipeline (default 100)")
    p.add_argument("--warmup", type=int, default=10, metavar="N", help="warm-up requests before timing (coral)")
    p.add_argument("--spec", default="usb", metavar="usb|pcie|FILE.json", help="Edge TPU cost-model constants (sim)")
    p.add_argument("--plot", metavar="FILE.png", help="draw the per-stage time and parameter breakdown")
    p.add_argument("--json", action="store_true", help="print JSON")
    return p


def _run(args: argparse.Namespace) -> dict[str, Any]:
    """The report of the segments run on Edge TPUs (coral) or chained in LiteRT and simulated (sim)."""
    if args.backend == "coral":
        devices = parse_devices(args.devices) if args.devices else None
        return run_hardware(
            find_segments(args.dir, args.tpus, compiled=True),
            args.count,
            max(args.warmup, 0),
            args.runner,
            devices,
            terminal_progress,
        )
    if args.devices is not None or args.runner != "auto":
        raise RespectPassError("--runner and --devices apply to --backend coral only")
    return run_sim(find_segments(args.dir, args.tpus), load_spec(args.spec), args.count)


def _write_plot(plot: Path, report: dict[str, Any], args: argparse.Namespace) -> None:
    """Draw the per-stage chart of ``report`` (with the spec's cache size when simulated) to ``plot``."""
    cache = cache_bytes(load_spec(args.spec)) if args.backend == "sim" else None
    title = f"{report['num_segments']} segments, " + (
        f"simulated ({report['spec']} spec)" if args.backend == "sim" else "measured on Edge TPUs"
    )
    write_files(plot.parent, {plot.name: stage_plot_png(report["stages"], title, cache)})


def _format_sim(report: dict[str, Any]) -> str:
    """The table of a simulated run: each segment's predicted times and bytes, the figures, what was verified."""
    rows = [f"{'seg':>3}  {'ms':>8}  {'compute':>8}  {'stream':>8}  {'io':>8}  {'params B':>11}  {'off-chip B':>11}  file"]
    for s in report["stages"]:
        rows.append(
            f"{s['index']:>3}  {s['ms']:>8.3f}  {s['compute_ms']:>8.3f}  {s['stream_ms']:>8.3f}  {s['io_ms']:>8.3f}  "
            f"{s['param_bytes']:>11,}  {s['off_chip_bytes']:>11,}  {s['file']}"
        )
    rows.append(f"simulated ({report['spec']} spec): {figures_line(report)}")
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
    """Period, throughput and idle latency first; latency under load labelled as such."""
    return (
        f"period {report['bottleneck_ms']:.3f} ms ({report['throughput_ips']:.1f} inferences/s), "
        f"latency {report['latency_ms']:.3f} ms idle; under load ({report['num_segments']} requests in flight, "
        f"{report['count']} requests) p50 {report['latency_loaded_p50_ms']:.2f} ms, "
        f"p99 {report['latency_loaded_p99_ms']:.2f} ms"
    )


def format_coral(report: dict[str, Any]) -> str:
    """The table of a coral (real Edge TPU) run: each segment alone and in the pipeline, then the figures."""
    rows = [
        f"{'seg':>3}  {'alone ms':>8}  {'pipe ms':>8}  {'params B':>11}  {'cached B':>11}  {'off-chip B':>11}  "
        f"{'device':<6}  file"
    ]
    for s, dev in zip(report["stages"], report["devices"]):
        pipe = "-" if s["ms_in_pipeline"] is None else f"{s['ms_in_pipeline']:.3f}"
        rows.append(
            f"{s['index']:>3}  {s['ms']:>8.3f}  {pipe:>8}  {_num(s.get('param_bytes')):>11}  "
            f"{_num(s.get('on_chip_bytes')):>11}  {_num(s.get('off_chip_bytes')):>11}  {dev:<6}  {s['file']}"
        )
    rows.append(f"measured on {report['num_segments']} Edge TPU(s) ({report['runner']} runner): {figures_line(report)}")
    return "\n".join(rows)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``run_pipeline`` console script."""
    return run_cli("run_pipeline", _body, list(sys.argv[1:] if argv is None else argv))


if __name__ == "__main__":
    sys.exit(main())
