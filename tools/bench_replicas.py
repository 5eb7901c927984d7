"""Replica benchmark: what K TPUs buy with segments on several TPUs, against the pipeline and whole-model copies.

For each zoo model (the scheduler benchmark's set: ``zoo/*_224_int8.tflite`` and Inception v3), each K
in 2..8 and each of the ``usb`` (one shared host controller) and ``usb-separate`` presets, the default
plan (``respect``'s pipeline given replicas by :func:`respect_pass.replicas.with_replicas`) is set beside
two baselines: ``respect``'s pipeline (one TPU per stage, ``--no-replicas``) and one whole-model copy
per TPU. Every figure is *predicted* by the device model (hardware/, the preset named), not measured.
It checks the plan is never slower than the better baseline, reports the geomean and largest gain
over the pipeline, MobileNetV2's throughput against one TPU, and runs replicated plans through
``run_pipeline --backend sim`` (bit-exact chaining, simulated period against the predicted one; the
simulator hands results out in request order through its reorder buffer). Writes
``results/bench_replicas.csv`` and ``results/bench_replicas.md``.

    python -m tools.bench_replicas                     # zoo, K = 2..8, usb and usb-separate
    python -m tools.bench_replicas --models mobilenetv2_224_int8 --ks 4,8
"""

from __future__ import annotations

import argparse
import csv
import math
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from hardware import PRESETS, EdgeTpuSpec
from hardware.kernel import cost_arrays, map_period_s
from respect_pass.partition import load_model, partition
from respect_pass.replicas import whole_model_copies, with_replicas
from respect_pass.run_pipeline import open_pipeline, run_sim
from respect_pass.schedulers import get_scheduler
from tflite_io import OpGraph

from .common import ROOT, commit, machine, parse_ks

__all__ = ["ReplicaRow", "SimCheck", "replica_row", "sim_check", "main"]

SPECS = ("usb", "usb-separate")
#: (model stem, K, preset) of the replicated plans run through the simulator
SIM_CASES = (
    ("mobilenetv2_224_int8", 4, "usb-separate"),
    ("resnet50_224_int8", 8, "usb"),
    ("inceptionv3_299_int8", 6, "usb"),
)


@dataclass(frozen=True)
class ReplicaRow:
    """One (model, spec, K): the default plan against its pipeline and whole-model copies (ms, predicted)."""

    model: str
    spec: str
    k: int
    segments: int
    replicas: str
    period_ms: float
    pipeline_ms: float
    copies_ms: float
    one_tpu_ms: float
    seconds: float

    @property
    def gain_over_pipeline(self) -> float:
        return self.pipeline_ms / self.period_ms

    @property
    def never_worse(self) -> bool:
        return self.period_ms <= min(self.pipeline_ms, self.copies_ms) * (1 + 1e-9)


@dataclass(frozen=True)
class SimCheck:
    """A replicated plan run through ``run_pipeline --backend sim``."""

    model: str
    spec: str
    k: int
    replicas: str
    verified: bool | None
    predicted_ms: float
    simulated_ms: float


def replica_row(name: str, graph: OpGraph, k: int, spec: EdgeTpuSpec) -> ReplicaRow:
    """Plan ``graph`` for ``k`` TPUs with respect and replicas; cost it beside its pipeline and the copies."""
    t0 = time.perf_counter()
    pipeline = get_scheduler("respect")(graph, k, spec)
    plan = with_replicas(graph, pipeline, k, spec)
    seconds = time.perf_counter() - t0
    ca = cost_arrays(graph, spec)
    period = map_period_s(ca, np.asarray(plan.stages), plan.num_stages, plan.stage_replicas)[0]
    pipe = map_period_s(ca, np.asarray(pipeline.stages), pipeline.num_stages)[0]
    return ReplicaRow(
        name,
        spec.name,
        k,
        plan.num_stages,
        "+".join(map(str, plan.stage_replicas)),
        period * 1e3,
        pipe * 1e3,
        whole_model_copies(ca, k)[0] * 1e3,
        whole_model_copies(ca, 1)[0] * 1e3,
        seconds,
    )


def sim_check(path: Path, k: int, spec_name: str, count: int = 200) -> SimCheck:
    """Partition ``path`` for ``k`` TPUs (replicas, verified), then simulate it as ``run_pipeline`` does."""
    spec = PRESETS[spec_name]
    with tempfile.TemporaryDirectory() as tmp:
        result = partition(path, k, Path(tmp) / "out", spec=spec, verify=True)
        report = run_sim(open_pipeline(Path(tmp) / "out").segments, spec, count=count)
    reps = "+".join(map(str, result.plan.stage_replicas))
    predicted = float(result.plan_doc["predicted_bottleneck_ms"])
    return SimCheck(path.stem, spec_name, k, reps, report["verified"], predicted, float(report["bottleneck_ms"]))


def _table(rows: list[ReplicaRow]) -> list[str]:
    lines = [
        "| model | spec | K | segments | TPUs per segment | period ms | pipeline ms | copies ms "
        "| gain over pipeline | vs 1 TPU |",
        "|---|---|---:|---:|---|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(
            f"| {r.model} | {r.spec} | {r.k} | {r.segments} | {r.replicas} | {r.period_ms:.3f} | {r.pipeline_ms:.3f} | "
            f"{r.copies_ms:.3f} | {r.gain_over_pipeline:.2f}x | {r.one_tpu_ms / r.period_ms:.2f}x |"
        )
    return lines


def _summary(rows: list[ReplicaRow], sims: list[SimCheck]) -> list[str]:
    lines = ["| spec | runs | never slower than the better baseline | geomean gain over pipeline | max gain |"]
    lines.append("|---|---:|---:|---:|---:|")
    for spec in SPECS:
        mine = [r for r in rows if r.spec == spec]
        if not mine:
            continue
        gains = [r.gain_over_pipeline for r in mine]
        geo = math.exp(sum(map(math.log, gains)) / len(gains))
        best = max(mine, key=lambda r: r.gain_over_pipeline)
        lines.append(
            f"| {spec} | {len(mine)} | {sum(r.never_worse for r in mine)}/{len(mine)} | {geo:.2f}x | "
            f"{best.gain_over_pipeline:.2f}x ({best.model}, K={best.k}) |"
        )
    mnv2 = [r for r in rows if r.model.startswith("mobilenetv2") and r.k in (4, 8)]
    if mnv2:
        lines += ["", "MobileNetV2, throughput against one TPU (goal: >= 3.3x at K=4, >= 6x at K=8 on usb-separate):", ""]
        lines += [f"- {r.spec}, K={r.k}: {r.one_tpu_ms / r.period_ms:.2f}x ({r.replicas} TPUs per segment)" for r in mnv2]
    if sims:
        lines += ["", "Replicated plans through `run_pipeline --backend sim` (200 requests):", ""]
        lines += ["| model | spec | K | TPUs per segment | bit-exact | predicted ms | simulated ms | off by |"]
        lines += ["|---|---|---:|---|---|---:|---:|---:|"]
        for s in sims:
            lines.append(
                f"| {s.model} | {s.spec} | {s.k} | {s.replicas} | {s.verified} | {s.predicted_ms:.4f} | "
                f"{s.simulated_ms:.4f} | {(s.simulated_ms / s.predicted_ms - 1) * 100:+.2f}% |"
            )
    return lines


def _models(names: str | None) -> list[Path]:
    zoo = sorted((ROOT / "zoo").glob("*_224_int8.tflite")) + sorted((ROOT / "zoo").glob("inceptionv3_299_int8.tflite"))
    if names:
        wanted = set(names.split(","))
        zoo = [p for p in zoo if p.stem in wanted]
    return zoo


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tools.bench_replicas", description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", help="comma-separated zoo stems (default: the scheduler benchmark's zoo)")
    parser.add_argument("--ks", default="2-8", help="K values, e.g. 2-8 or 4,8")
    parser.add_argument("--out", type=Path, default=ROOT / "results", help="output directory")
    parser.add_argument("--no-sim", action="store_true", help="skip the run_pipeline --backend sim checks")
    args = parser.parse_args(argv)
    paths = _models(args.models)
    if not paths:
        print("no zoo models found: run `make zoo` first", file=sys.stderr)
        return 2
    t0, head = time.perf_counter(), commit()
    rows: list[ReplicaRow] = []
    for path in paths:
        graph = load_model(path).graph
        for spec_name in SPECS:
            for k in parse_ks(args.ks):
                rows.append(replica_row(path.stem, graph, k, PRESETS[spec_name]))
                r = rows[-1]
                print(
                    f"{r.model:<28} {r.spec:<12} K={k}  {r.replicas:<14} {r.period_ms:8.3f} ms  "
                    f"pipeline {r.pipeline_ms:8.3f}  copies {r.copies_ms:8.3f}",
                    flush=True,
                )
    sims = []
    if not args.no_sim:
        stems = {p.stem: p for p in paths}
        sims = [sim_check(stems[m], k, s) for m, k, s in SIM_CASES if m in stems]
    args.out.mkdir(parents=True, exist_ok=True)
    with open(args.out / "bench_replicas.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=[*asdict(rows[0]), "gain_over_pipeline", "never_worse"])
        w.writeheader()
        for r in rows:
            w.writerow({**asdict(r), "gain_over_pipeline": r.gain_over_pipeline, "never_worse": r.never_worse})
    report = [
        f"# Replica benchmark ({time.strftime('%Y-%m-%d')}, commit {head}, {machine()}, {time.perf_counter() - t0:.0f} s)",
        "",
        "Every period is predicted by the device model (hardware/, the preset named), not measured on a TPU.",
        "",
        *_summary(rows, sims),
        "",
        *_table(rows),
    ]
    (args.out / "bench_replicas.md").write_text("\n".join(report) + "\n")
    print("\n".join(_summary(rows, sims)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
