"""``run_pipeline``: find the K segment files in a directory and run them as a pipeline.

    run_pipeline --tpus K DIR [--backend sim] [--count N] [--spec usb|pcie|FILE.json] [--json]

The ``sim`` backend chains the segments through the LiteRT interpreter and,
when ``<stem>_plan.json`` names the original model, checks that every
boundary tensor and output is bit-identical to the full model; stage times
come from the Edge TPU cost model and N requests go through a discrete-event
model of PipelinedModelRunner (queues of size 1 between segments).
"""
from __future__ import annotations

import json
import re
import sys
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from hardware import USB, EdgeTpuSpec, load_spec, simulate_pipeline, stage_costs
from tflite_io import RespectPassError, read_model, verify_segments

from .cli import OneLineParser, run_cli

__all__ = ["SegmentSet", "find_segments", "run_sim", "main"]

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


def run_sim(segments: SegmentSet, spec: EdgeTpuSpec = USB, count: int = 100) -> dict[str, Any]:
    """Chain the segments through LiteRT, verify against the plan's model when it is available,
    and simulate ``count`` requests through the pipeline with cost-model stage times."""
    models = [read_model(p) for p in segments.paths]
    verified = None
    if segments.plan_path.is_file():
        try:
            source = Path(json.loads(segments.plan_path.read_text())["model"])
        except (ValueError, KeyError, TypeError) as exc:
            raise RespectPassError(f"{segments.plan_path}: unreadable plan ({exc})") from None
        if source.is_file():
            report = verify_segments(read_model(source).data, [m.data for m in models])
            verified = report.ok
            if not report.ok:
                raise RespectPassError(f"segments are not bit-exact with {source}: {report.mismatches[0]}")
    costs = [stage_costs(m.graph, (0,) * m.graph.num_ops, 1, spec)[0] for m in models]
    stages = [{**replace(c, index=i).as_json(), "file": str(p)} for i, (c, p) in enumerate(zip(costs, segments.paths))]
    run = simulate_pipeline([c.ms for c in costs], count=count)
    return {
        "backend": "sim",
        "spec": spec.name,
        "num_segments": len(models),
        "count": count,
        "bottleneck_ms": max(c.ms for c in costs),
        "latency_ms": sum(c.ms for c in costs),
        "latency_p50_ms": run.latency_p50_ms,
        "latency_p99_ms": run.latency_p99_ms,
        "throughput_ips": run.throughput_ips,
        "verified": verified,
        "stages": stages,
    }


def _body(argv: Sequence[str]) -> int:
    p = OneLineParser(prog="run_pipeline", description="Run K segment files as an Edge TPU pipeline.")
    p.add_argument("dir", metavar="DIR", help="directory holding <stem>_segment_<i>_of_<K>.tflite")
    p.add_argument("--tpus", type=int, required=True, metavar="K", help="number of segments / Edge TPUs")
    p.add_argument("--backend", choices=["sim"], default="sim", help="sim: LiteRT chaining (default)")
    p.add_argument("--count", type=int, default=100, metavar="N", help="requests pushed through the pipeline (default 100)")
    p.add_argument("--spec", default="usb", metavar="usb|pcie|FILE.json", help="Edge TPU cost-model constants (sim)")
    p.add_argument("--json", action="store_true", help="print JSON")
    args = p.parse_args(argv)
    if args.count < 1:
        raise RespectPassError(f"--count must be at least 1, got {args.count}")
    report = run_sim(find_segments(args.dir, args.tpus), load_spec(args.spec), args.count)
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        print(f"{'seg':>3}  {'ms':>8}  {'compute':>8}  {'stream':>8}  {'io':>8}  {'params B':>11}  {'off-chip B':>11}  file")
        for s in report["stages"]:
            print(f"{s['index']:>3}  {s['ms']:>8.3f}  {s['compute_ms']:>8.3f}  {s['stream_ms']:>8.3f}  {s['io_ms']:>8.3f}  "
                  f"{s['param_bytes']:>11,}  {s['off_chip_bytes']:>11,}  {s['file']}")
        print(f"simulated ({report['spec']} spec, {report['count']} requests): bottleneck {report['bottleneck_ms']:.3f} ms, "
              f"throughput {report['throughput_ips']:.1f} inferences/s, latency {report['latency_ms']:.3f} ms "
              f"(p50 {report['latency_p50_ms']:.2f}, p99 {report['latency_p99_ms']:.2f} ms with all requests queued at once)")
        v = report["verified"]
        print("verified: " + ("bit-exact with the full model" if v else "not checked (no plan.json naming the model)"))
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``run_pipeline`` console script."""
    return run_cli("run_pipeline", _body, list(sys.argv[1:] if argv is None else argv))


if __name__ == "__main__":
    sys.exit(main())
