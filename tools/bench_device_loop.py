"""Device-loop benchmark: calibrate and --refine-on-device against a simulated device with hidden constants.

For each trial a TRUTH spec is drawn (every constant of the ``usb`` preset
scaled by a factor in 0.5-2x, log-uniform; conv efficiency capped at 1) and a
:class:`hardware.calibrate.SimDevice` plays it: the fitter and the loop see
only measured times. Reported per trial:

* ``calibrate``: device runs, and the worst relative error of the fitted
  spec's predicted period against TRUTH's for the plans ``dp`` makes with the
  fitted spec, on held-out models (zoo if built, the embedded model, the
  branchy test model, generated graphs) at K = 1..8;
* ``--refine-on-device 3`` from the calibrated spec and from the uncalibrated
  preset, and libcoral's profiling partitioner using TRUTH as its device:
  the true period reached over that of the best ``dp`` plan for TRUTH (libcoral's
  search can beat it: it is not restricted to one order), and device runs.
  The loop sees noisy timings (``--jitter``); the profiling partitioner gets
  TRUTH's exact times, which favours it.

    python -m tools.bench_device_loop --trials 3 --out results/device_loop
"""

from __future__ import annotations

import argparse
import csv
import platform
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from hardware import USB, EdgeTpuSpec
from hardware.calibrate import SimDevice, calibrate
from hardware.placement import placed
from hardware.spec import scaled_spec
from respect_pass.generator import generate
from respect_pass.partition import load_model
from respect_pass.refine_device import refine_on_device
from tflite_io import OpGraph, TfliteModel, read
from tools.common import ROOT, period_ms, run_scheduler

__all__ = ["PERTURBED", "random_truth", "calibration_row", "loop_row", "main", "summary"]

EMBEDDED = ROOT / "respect_pass" / "data" / "mobilenet_v2_0.35_96_int8.tflite"
BRANCHY = ROOT / "tests" / "data" / "tiny_inception_int8.tflite"
LOOP_MODELS = ("densenet121_224", "inceptionv3_299", "inceptionresnetv2_299", "resnet50_224", "mobilenet_224")


#: the constants each TRUTH perturbs, in the order their factors are drawn (the others keep the preset's value)
PERTURBED = (
    "t_invoke_s",
    "efficiency.conv",
    "efficiency.depthwise",
    "elementwise_s_per_byte",
    "io_bytes_per_s",
    "stream_bytes_per_s",
    "stream_tile_positions",
    "cache_bytes",
    "cache_io_share",
    "shared_link_bytes_per_s",
)


def random_truth(rng: np.random.Generator) -> EdgeTpuSpec:
    """The ``usb`` preset with each constant of :data:`PERTURBED` scaled by its own log-uniform factor in 0.5-2x
    (drawn in that order; conv efficiency capped at 1, integer constants truncated), called ``truth``."""
    factors = {key: float(np.exp(rng.uniform(np.log(0.5), np.log(2.0)))) for key in PERTURBED}
    return scaled_spec(USB, lambda key: factors.get(key, 1.0), name="truth")


def calibration_row(trial: int, fitted: EdgeTpuSpec, runs: int, truth: EdgeTpuSpec, held: list[OpGraph]) -> dict:
    """How well the ``fitted`` spec predicts TRUTH's period of the plans ``dp`` makes with it, on ``held``, K = 1..8."""
    errors = []
    for g in held:
        for k in range(1, 9):
            plan = run_scheduler(g, k, fitted, "dp")
            errors.append(abs(plan.period_ms / period_ms(g, plan.stages, k, truth) - 1))
    return {
        "trial": trial,
        "device_runs": runs,
        "cases": len(errors),
        "max_error_pct": 100 * max(errors),
        "mean_error_pct": 100 * float(np.mean(errors)),
        "within_5pct": sum(e < 0.05 for e in errors),
    }


def loop_row(trial: int, m: TfliteModel, k: int, fitted: EdgeTpuSpec, truth: EdgeTpuSpec, jitter: float) -> dict:
    """The loop from the ``fitted`` spec and from the preset, and libcoral's partitioner, on (``m``, ``k``): the
    true period each reaches over that of ``dp``'s plan for TRUTH, and the device runs each spends."""
    best = run_scheduler(m.graph, k, truth, "dp").period_ms
    row: dict = {"trial": trial, "model": m.path.stem, "k": k, "best_for_truth_ms": best}
    for label, start in (("calibrated", fitted), ("preset", USB)):
        ref = refine_on_device(m, k, start, SimDevice(truth, jitter=jitter, seed=k), 3, scheduler="dp")
        first = run_scheduler(m.graph, k, start, "dp")
        row[f"{label}_first"] = period_ms(m.graph, first.stages, k, truth) / best
        row[f"{label}_refined"] = period_ms(m.graph, ref.plan.stages, k, truth) / best
        row[f"{label}_runs"] = ref.device_runs
    prof = run_scheduler(m.graph, k, truth, "profiling")
    row["profiling"] = prof.period_ms / best
    row["profiling_runs"] = prof.stats.get("device_runs", 0)
    return row


def main(argv: list[str] | None = None) -> int:
    """Run the trials, write the two CSVs and the markdown report, print the report."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--trials", type=int, default=3)
    ap.add_argument("--ks", default="2,4,8")
    ap.add_argument("--jitter", type=float, default=0.0, help="relative noise of every simulated timing")
    ap.add_argument("--zoo", default=str(ROOT / "zoo"))
    ap.add_argument("--out", default=str(ROOT / "results" / "device_loop"))
    args = ap.parse_args(argv)
    ks = [int(k) for k in args.ks.split(",")]
    zoo = Path(args.zoo)
    held = [placed(read(p)) for p in sorted(zoo.glob("*.tflite"))] + [placed(read(EMBEDDED)), placed(read(BRANCHY))]
    held += [generate(f, n, s) for f, n, s in (("residual", 200, 1), ("inception", 300, 2), ("nas_cell", 400, 3))]
    loop_paths = [zoo / f"{m}_int8.tflite" for m in LOOP_MODELS if (zoo / f"{m}_int8.tflite").is_file()]
    loop_models = [load_model(p) for p in [*loop_paths, EMBEDDED, BRANCHY]]
    cal_rows, loop_rows = [], []
    t_start = time.time()
    for trial in range(args.trials):
        truth = random_truth(np.random.default_rng(1000 + trial))
        cal = calibrate(SimDevice(truth, jitter=args.jitter, seed=trial), USB, name=f"fitted{trial}")
        cal_rows.append(calibration_row(trial, cal.spec, cal.measurements, truth, held))
        print(
            f"trial {trial}: calibrate {cal.measurements} runs, held-out max error {cal_rows[-1]['max_error_pct']:.2f}%",
            flush=True,
        )
        for m in loop_models:
            for k in (k for k in ks if k <= m.graph.num_ops):
                row = loop_row(trial, m, k, cal.spec, truth, args.jitter)
                loop_rows.append(row)
                print("  " + " ".join(f"{v:.3f}" if isinstance(v, float) else str(v) for v in row.values()), flush=True)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    for suffix, rows in (("_calibrate.csv", cal_rows), ("_refine.csv", loop_rows)):
        with open(f"{out}{suffix}", "w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=list(rows[0]))
            w.writeheader()
            w.writerows(rows)
    report = summary(cal_rows, loop_rows, time.time() - t_start, args.jitter)
    Path(f"{out}.md").write_text(report)
    print(report)
    return 0


def summary(cal_rows: list[dict], loop_rows: list[dict], seconds: float, jitter: float) -> str:
    """The markdown report: calibration accuracy per trial, then the loop against libcoral's partitioner."""
    when = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    lines = [
        f"Device loop on a simulated device with hidden constants ({when}, {platform.node()}, "
        f"{platform.processor() or platform.machine()}, Python {platform.python_version()}, {seconds / 60:.1f} min). "
        f"Timing noise: {100 * jitter:g}% (lognormal). Every figure is the cost model under TRUTH: no Edge TPU "
        "was used.",
        "",
        "| trial | calibrate device runs | held-out cases (K=1..8) | max error % | mean error % | within 5% |",
        "|---|---|---|---|---|---|",
    ]
    lines += [
        f"| {r['trial']} | {r['device_runs']} | {r['cases']} | {r['max_error_pct']:.2f} | {r['mean_error_pct']:.3f} "
        f"| {r['within_5pct']}/{r['cases']} |"
        for r in cal_rows
    ]
    n = len(loop_rows)

    def within(key: str) -> int:
        return sum(r[key] <= 1.02 for r in loop_rows)

    def mean(key: str) -> float:
        return float(np.mean([r[key] for r in loop_rows]))

    def worst(key: str) -> float:
        return float(np.max([r[key] for r in loop_rows]))

    lines += [
        "",
        "| method | runs (period within 2% of the best plan for TRUTH) | mean period / best | worst | "
        "mean device runs | max device runs |",
        "|---|---|---|---|---|---|",
    ]
    for label, key, runs in (
        ("calibrated spec, no refinement", "calibrated_first", None),
        ("calibrated spec + --refine-on-device 3", "calibrated_refined", "calibrated_runs"),
        ("usb preset + --refine-on-device 3", "preset_refined", "preset_runs"),
        ("libcoral profiling partitioner (TRUTH as its device)", "profiling", "profiling_runs"),
    ):
        r_mean = f"{mean(runs):.1f}" if runs else "0 (after calibrate)"
        r_max = f"{worst(runs):.0f}" if runs else "0"
        lines.append(f"| {label} | {within(key)}/{n} | {mean(key):.4f} | {worst(key):.4f} | {r_mean} | {r_max} |")
    lines.append("")
    lines.append("Calibration's runs are made once per device; the loop's runs once per model and K.")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(main())
