"""Scheduler benchmark: every scheduler on the zoo and a seeded synthetic suite, K = 2..8.

For each (graph, K, scheduler) it records the predicted bottleneck and
latency (the cost model, USB spec), the speedup in throughput over the
``compiler`` split and over one Edge TPU, the gap to ``exact``, whether
``exact`` proved optimality, and the solve time. Writes
``results/bench.csv``, ``results/bench.md`` (tables plus the three headline
comparisons of the RESPECT paper) and ``results/bench_speedup.png``.

    python tools/bench.py                       # zoo + 24 synthetic graphs, K = 2..8
    python tools/bench.py --quick               # CI: embedded + test model + 4 small synthetic graphs, K = 2,4
    python tools/bench.py --schedulers dp,exact --ks 4 --models resnet50_224_int8

The three headline comparisons (paper: Yin et al., DAC 2023):
1. pipeline speedup over the compiler's segmentation (paper: up to ~2.5x on device);
2. scheduling time against the exact solver at matched quality (paper: up to 930x);
3. generalisation: quality of a scheduler trained on small synthetic graphs
   on large real ones (gap to exact on synthetic vs on real models).
"""
from __future__ import annotations

import argparse
import csv
import logging
import math
import platform
import statistics
import sys
import time
from datetime import date
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from hardware import USB, stage_costs  # noqa: E402
from respect_pass.schedulers import SCHEDULERS  # noqa: E402
from tflite_io import OpGraph, RespectPassError, read  # noqa: E402

DEFAULT_SCHEDULERS = ("compiler", "profiling", "dp", "multiorder", "exact", "respect")
FIELDS = ["suite", "graph", "ops", "params_mib", "K", "scheduler", "bottleneck_ms", "latency_ms", "speedup_vs_compiler",
          "speedup_vs_1tpu", "gap_to_exact_pct", "exact_optimal", "solve_s"]


def parse_ks(text: str) -> list[int]:
    if "-" in text:
        a, b = text.split("-")
        return list(range(int(a), int(b) + 1))
    return [int(x) for x in text.split(",")]


def graphs(quick: bool, synthetic: int, models: list[str] | None) -> list[tuple[str, OpGraph]]:
    """(suite, graph) pairs: zoo models (or the small committed models with --quick) and synthetic graphs."""
    out: list[tuple[str, OpGraph]] = []
    if quick:
        out += [("real", read(ROOT / "respect_pass/data/mobilenet_v2_0.35_96_int8.tflite")),
                ("real", read(ROOT / "tests/data/tiny_inception_int8.tflite"))]
    else:
        zoo = sorted((ROOT / "zoo").glob("*_224_int8.tflite")) + sorted((ROOT / "zoo").glob("inceptionv3_299_int8.tflite"))
        out += [("real", read(p)) for p in zoo if models is None or p.stem in models]
    try:
        from respect_pass.generator import generate_suite
    except ImportError:
        logging.warning("no synthetic generator yet; real models only")
        return out
    if synthetic:
        max_ops = 60 if quick else 300
        out += [("synthetic", g) for g in generate_suite(synthetic, seed=2026, min_ops=20, max_ops=max_ops)]
    return out


def run_one(graph: OpGraph, k: int, name: str, options: dict) -> tuple[float, float, float, dict]:
    t0 = time.perf_counter()
    plan = SCHEDULERS[name](graph, k, USB, **options.get(name, {}))
    seconds = time.perf_counter() - t0
    ms = [c.ms for c in stage_costs(graph, plan.stages, k, USB)]
    return max(ms), sum(ms), seconds, {"optimal": plan.optimal}


def bench(pairs, ks, names, options) -> list[dict]:
    rows = []
    for suite, g in pairs:
        one_tpu = stage_costs(g, (0,) * g.num_ops, 1, USB)[0].ms
        for k in ks:
            results = {}
            for name in names:
                try:
                    results[name] = run_one(g, k, name, options)
                except RespectPassError as exc:
                    logging.info("%s K=%d %s: %s", g.name, k, name, exc)
            if "compiler" not in results:
                continue
            base = results["compiler"][0]
            exact = results.get("exact")
            for name, (bott, lat, secs, extra) in results.items():
                rows.append({
                    "suite": suite, "graph": g.name, "ops": g.num_ops, "params_mib": round(g.total_param_bytes / 2**20, 2),
                    "K": k, "scheduler": name, "bottleneck_ms": round(bott, 4), "latency_ms": round(lat, 4),
                    "speedup_vs_compiler": round(base / bott, 4), "speedup_vs_1tpu": round(one_tpu / bott, 4),
                    "gap_to_exact_pct": round(100 * (bott / exact[0] - 1), 3) if exact else "",
                    "exact_optimal": exact[3]["optimal"] if exact else "", "solve_s": round(secs, 4),
                })
            print(f"{g.name:<28} K={k}  " + "  ".join(f"{n}={r[0]:.3f}" for n, r in results.items()), flush=True)
    return rows


def geomean(values) -> float:
    values = [v for v in values if v > 0]
    return math.exp(statistics.fmean(math.log(v) for v in values)) if values else float("nan")


def summary(rows: list[dict], names: list[str]) -> str:
    """Per-scheduler summary and the three headline comparisons, as markdown."""
    lines = ["| suite | scheduler | runs | geo-mean speedup vs compiler | max speedup | geo-mean speedup vs 1 TPU | "
             "mean gap to exact % | max gap % | at exact's optimum | median solve s |", "|---|---|---|---|---|---|---|---|---|---|"]
    for suite in ("real", "synthetic"):
        for name in names:
            rs = [r for r in rows if r["suite"] == suite and r["scheduler"] == name]
            if not rs:
                continue
            gaps = [r["gap_to_exact_pct"] for r in rs if r["gap_to_exact_pct"] != ""]
            hit = sum(1 for g in gaps if g <= 1e-6)
            lines.append(
                f"| {suite} | {name} | {len(rs)} | {geomean(r['speedup_vs_compiler'] for r in rs):.3f} | "
                f"{max(r['speedup_vs_compiler'] for r in rs):.3f} | {geomean(r['speedup_vs_1tpu'] for r in rs):.3f} | "
                f"{statistics.fmean(gaps):.2f} | {max(gaps):.2f} | {hit}/{len(gaps)} | "
                f"{statistics.median(r['solve_s'] for r in rs):.4f} |" if gaps else
                f"| {suite} | {name} | {len(rs)} | {geomean(r['speedup_vs_compiler'] for r in rs):.3f} | "
                f"{max(r['speedup_vs_compiler'] for r in rs):.3f} | {geomean(r['speedup_vs_1tpu'] for r in rs):.3f} | "
                f"- | - | - | {statistics.median(r['solve_s'] for r in rs):.4f} |")
    return "\n".join(lines)


def headline(rows: list[dict], names: list[str]) -> str:
    """The paper's three comparisons, computed from the rows."""
    out = []
    real = [r for r in rows if r["suite"] == "real"]
    best = max((r for r in real if r["scheduler"] != "compiler"), key=lambda r: r["speedup_vs_compiler"], default=None)
    if best:
        out.append(f"1. Speedup over the compiler's segmentation (predicted, real models): up to "
                   f"{best['speedup_vs_compiler']:.2f}x ({best['scheduler']} on {best['graph']}, K={best['K']}); paper: ~2.5x on device.")
    exact = {(r["graph"], r["K"]): r for r in rows if r["scheduler"] == "exact"}
    for name in names:
        if name in ("exact", "compiler"):
            continue
        matched = [(exact[(r["graph"], r["K"])]["solve_s"] / max(r["solve_s"], 1e-6))
                   for r in rows if r["scheduler"] == name and (r["graph"], r["K"]) in exact and r["gap_to_exact_pct"] != ""
                   and r["gap_to_exact_pct"] <= 1e-6]
        if matched:
            out.append(f"2. {name}: where it matches exact's bottleneck ({len(matched)} runs) it is "
                       f"{geomean(matched):.0f}x faster than exact (geo-mean), up to {max(matched):.0f}x; paper: up to 930x.")
    for name in names:
        gaps = {s: [r["gap_to_exact_pct"] for r in rows if r["scheduler"] == name and r["suite"] == s and r["gap_to_exact_pct"] != ""]
                for s in ("synthetic", "real")}
        if name not in ("exact", "compiler") and all(gaps.values()):
            out.append(f"3. {name}: mean gap to exact {statistics.fmean(gaps['synthetic']):.2f}% on synthetic graphs, "
                       f"{statistics.fmean(gaps['real']):.2f}% on real models.")
    return "\n".join(out)


def plot(rows: list[dict], names: list[str], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    real = [r for r in rows if r["suite"] == "real"]
    models = sorted({r["graph"] for r in real})
    ks = sorted({r["K"] for r in real})
    cols = min(5, len(models))
    nrows = -(-len(models) // cols)
    fig, axes = plt.subplots(nrows, cols, figsize=(2.6 * cols + 0.5, 2.4 * nrows + 0.4), sharey=True, squeeze=False)
    for ax in axes.flat[len(models):]:
        ax.axis("off")
    for ax, m in zip(axes.flat, models):
        for name in names:
            pts = sorted((r["K"], r["speedup_vs_compiler"]) for r in real if r["graph"] == m and r["scheduler"] == name)
            if pts:
                ax.plot(*zip(*pts), marker="o", markersize=3, label=name)
        ax.set_title(m.replace("_int8", ""), fontsize=7)
        ax.set_xticks(ks)
        ax.axhline(1.0, color="grey", linewidth=0.5)
    for row in axes:
        row[0].set_ylabel("speedup vs compiler", fontsize=7)
    axes.flat[0].legend(fontsize=6)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _typed(row: dict) -> dict:
    """A CSV row with numbers as numbers (empty cells stay "")."""
    out = dict(row)
    for key in ("ops", "K"):
        out[key] = int(row[key])
    for key in ("params_mib", "bottleneck_ms", "latency_ms", "speedup_vs_compiler", "speedup_vs_1tpu", "solve_s",
                "gap_to_exact_pct"):
        out[key] = float(row[key]) if row[key] != "" else ""
    out["exact_optimal"] = {"True": True, "False": False}.get(row["exact_optimal"], row["exact_optimal"])
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="seconds: small committed models, 4 small synthetic graphs, K=2,4")
    ap.add_argument("--ks", default=None, help="K values, e.g. 2-8 or 2,4 (default 2-8; quick: 2,4)")
    ap.add_argument("--schedulers", default=",".join(DEFAULT_SCHEDULERS))
    ap.add_argument("--models", default=None, help="comma-separated zoo stems (default: all)")
    ap.add_argument("--synthetic", type=int, default=None, help="number of synthetic graphs (default 24; quick: 4)")
    ap.add_argument("--time-limit", type=float, default=None, help="exact's time limit per run (default 60; quick: 10)")
    ap.add_argument("--out", default=str(ROOT / "results"), help="output directory")
    ap.add_argument("--from-csv", default=None, metavar="CSV", help="only re-render the tables and plot from a saved CSV")
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s: %(message)s")
    ks = parse_ks(args.ks or ("2,4" if args.quick else "2-8"))
    names = [n for n in args.schedulers.split(",") if n in SCHEDULERS]
    options = {"exact": {"time_limit_s": args.time_limit or (10.0 if args.quick else 60.0)}}
    if args.from_csv:
        rows = [_typed(r) for r in csv.DictReader(open(args.from_csv))]
        names = [n for n in names if any(r["scheduler"] == n for r in rows)]
    else:
        pairs = graphs(args.quick, args.synthetic if args.synthetic is not None else (4 if args.quick else 24),
                       args.models.split(",") if args.models else None)
        rows = bench(pairs, ks, names, options)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    stem = "bench_quick" if args.quick else "bench"
    with open(out / f"{stem}.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=FIELDS)
        w.writeheader()
        w.writerows(rows)
    machine = f"{platform.processor() or platform.machine()}, {platform.python_version()}"
    text = (f"Scheduler benchmark, {date.today()}, {machine}; predicted by the USB cost model.\n\n"
            + summary(rows, names) + "\n\n" + headline(rows, names) + "\n")
    (out / f"{stem}.md").write_text(text)
    if any(r["suite"] == "real" for r in rows):
        plot(rows, names, out / f"{stem}_speedup.png")
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
