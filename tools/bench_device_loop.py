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
from hardware.kernel import cost_arrays, map_period_s
from hardware.placement import placed
from respect_pass.generator import generate
from respect_pass.partition import load_model
from respect_pass.refine_device import refine_on_device
from respect_pass.schedulers import get_scheduler
from tflite_io import read

ROOT = Path(__file__).resolve().parent.parent

EMBEDDED = ROOT / "respect_pass" / "data" / "mobilenet_v2_0.35_96_int8.tflite"
BRANCHY = ROOT / "tests" / "data" / "tiny_inception_int8.tflite"
LOOP_MODELS = ("densenet121_224", "inceptionv3_299", "inceptionresnetv2_299", "resnet50_224", "mobilenet_224")


def random_truth(rng: np.random.Generator) -> EdgeTpuSpec:
    def s() -> float:
        return float(np.exp(rng.uniform(np.log(0.5), np.log(2.0))))

    return USB.with_(
        name="truth",
        t_invoke_s=USB.t_invoke_s * s(),
        efficiency={"conv": min(1.0, USB.efficiency["conv"] * s()), "depthwise": USB.efficiency["depthwise"] * s()},
        elementwise_s_per_byte=USB.elementwise_s_per_byte * s(),
        io_bytes_per_s=USB.io_bytes_per_s * s(),
        stream_bytes_per_s=USB.stream_bytes_per_s * s(),
        stream_tile_positions=int(USB.stream_tile_positions * s()),
        cache_bytes=int(USB.cache_bytes * s()),
        cache_io_share=USB.cache_io_share * s(),
        shared_link_bytes_per_s=USB.shared_link_bytes_per_s * s(),
    )


def period_ms(graph, stages, k, spec) -> float:
    return map_period_s(cost_arrays(graph, spec), stages, k)[0] * 1e3


def main(argv: list[str] | None = None) -> int:
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
    dp, prof = get_scheduler("dp"), get_scheduler("profiling")
    cal_rows, loop_rows = [], []
    t_start = time.time()
    for trial in range(args.trials):
        truth = random_truth(np.random.default_rng(1000 + trial))
        device = SimDevice(truth, jitter=args.jitter, seed=trial)
        cal = calibrate(device, USB, name=f"fitted{trial}")
        errors = []
        for g in held:
            for k in range(1, 9):
                stages = dp(g, k, cal.spec).stages
                errors.append(abs(period_ms(g, stages, k, cal.spec) / period_ms(g, stages, k, truth) - 1))
        cal_rows.append(
            {
                "trial": trial,
                "device_runs": cal.measurements,
                "cases": len(errors),
                "max_error_pct": 100 * max(errors),
                "mean_error_pct": 100 * float(np.mean(errors)),
                "within_5pct": sum(e < 0.05 for e in errors),
            }
        )
        print(f"trial {trial}: calibrate {cal.measurements} runs, held-out max error {100 * max(errors):.2f}%", flush=True)
        for m in loop_models:
            for k in ks:
                if k > m.graph.num_ops:
                    continue
                best = period_ms(m.graph, dp(m.graph, k, truth).stages, k, truth)
                row = {"trial": trial, "model": m.path.stem, "k": k, "best_for_truth_ms": best}
                for label, start in (("calibrated", cal.spec), ("preset", USB)):
                    ref = refine_on_device(m, k, start, SimDevice(truth, jitter=args.jitter, seed=k), 3, scheduler="dp")
                    row[f"{label}_first"] = period_ms(m.graph, dp(m.graph, k, start).stages, k, truth) / best
                    row[f"{label}_refined"] = period_ms(m.graph, ref.plan.stages, k, truth) / best
                    row[f"{label}_runs"] = ref.device_runs
                p = prof(m.graph, k, truth)
                row["profiling"] = period_ms(m.graph, p.stages, k, truth) / best
                row["profiling_runs"] = p.stats.get("device_runs", 0)
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
