"""Scheduler benchmark: every scheduler on the zoo and a seeded synthetic suite, K = 2..8.

For each (graph, K, scheduler) it records the predicted period and
latency (the cost model, USB spec), the speedup in throughput over the
``compiler`` split and over one Edge TPU, the gap to ``exact``, whether
``exact`` (and the scheduler itself) proved optimality, and the solve time.
Every run goes through :func:`tools.common.run_scheduler`. The CSV column
``bottleneck_ms`` is the *period* (``predicted_bottleneck_ms`` in plan.json):
the slowest stage or the USB preset's shared host link, whichever is longer;
the speedups and gaps are ratios of periods. CSVs written before the shared
runner (commits up to 0882847) held the slowest stage alone there, which is
below the period where the shared link binds (wide K, large activations).
Derived runs: ``multiorder@t`` is ``multiorder`` given exactly the time
``respect`` took on that (graph, K); ``respect+exact`` (CP-SAT warm-started
from ``respect``) runs only on the hard cases, where cold ``exact`` took over
``--hard-s`` seconds or did not prove optimality; ``respect-net`` runs the
policy network even where ``respect`` skips it (graphs with one topological
order), to time the full policy path there. Suites: ``real`` (the zoo),
``synthetic`` (generator graphs of 20-300 ops) and ``large`` (400-800 ops,
several times the policy's largest training graph). Writes
``results/bench.csv``, ``results/bench.md`` (summary, per-model table, the
synthetic families, warm-start ratios and the three headline comparisons of
the RESPECT paper) and ``results/bench_speedup.png``.

    python -m tools.bench                       # zoo + 12 synthetic + 6 large graphs, K = 2..8
    python -m tools.bench --quick               # CI: embedded + test model + 4 small synthetic graphs, K = 2,4
    python -m tools.bench --schedulers dp,exact --ks 4 --models resnet50_224_int8

The three headline comparisons (paper: Yin et al., DAC 2023):
1. pipeline speedup over the compiler's segmentation (paper: up to ~2.5x on device);
2. scheduling time against the exact solver at matched quality (paper: up to 930x);
3. generalisation: quality of a scheduler trained on small synthetic graphs
   on large real ones (gap to exact on synthetic vs on real models).
"""

from __future__ import annotations

import argparse
import csv
import json
import logging
import math
import statistics
import sys
import time
from datetime import date
from pathlib import Path
from typing import Any

from hardware import USB
from respect_pass.orders import has_unique_order
from respect_pass.schedulers import SCHEDULERS
from tflite_io import OpGraph, RespectPassError, read
from tools.common import RunRecord, commit, machine, parse_ks, period_ms, run_scheduler

__all__ = ["graphs", "run_one", "run_all", "bench", "summary", "report", "main"]

ROOT = Path(__file__).resolve().parent.parent

DEFAULT_SCHEDULERS = (
    "compiler",
    "profiling",
    "dp",
    "multiorder",
    "exact",
    "respect",
    "multiorder@t",
    "respect+exact",
    "respect-net",
)
DERIVED = ("multiorder@t", "respect+exact", "respect-net")  # run after the others, from their results
FIELDS = [
    "suite",
    "graph",
    "ops",
    "params_mib",
    "K",
    "scheduler",
    "bottleneck_ms",
    "latency_ms",
    "speedup_vs_compiler",
    "speedup_vs_1tpu",
    "gap_to_exact_pct",
    "gap_to_best_pct",
    "exact_optimal",
    "proved_optimal",
    "solve_s",
    "one_order",
]
SUITES = ("real", "synthetic", "large")


def graphs(quick: bool, synthetic: int, large: int, models: list[str] | None) -> list[tuple[str, OpGraph]]:
    """(suite, graph) pairs: zoo models (or the small committed models with --quick) and synthetic graphs."""
    out: list[tuple[str, OpGraph]] = []
    if quick:
        out += [
            ("real", read(ROOT / "respect_pass/data/mobilenet_v2_0.35_96_int8.tflite")),
            ("real", read(ROOT / "tests/data/tiny_inception_int8.tflite")),
        ]
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
    if large:
        out += [("large", g) for g in generate_suite(large, seed=2027, min_ops=400, max_ops=800)]
    return out


#: the scheduler each derived run calls (the others call the scheduler of their own name)
_RUNS_AS = {"multiorder@t": "multiorder", "respect-net": "respect"}


def run_one(graph: OpGraph, k: int, name: str, kwargs: dict[str, Any]) -> RunRecord:
    """One run of the scheduler behind ``name`` under the USB spec (:func:`tools.common.run_scheduler`)."""
    return run_scheduler(graph, k, USB, _RUNS_AS.get(name, name), label=name, **kwargs)


def run_all(g: OpGraph, k: int, names: list[str], options: dict, hard_s: float) -> dict[str, RunRecord]:
    """Every scheduler in ``names`` on (g, k); the derived runs from the others' results."""
    results: dict[str, RunRecord] = {}
    for name in (n for n in names if n not in DERIVED):
        try:
            results[name] = run_one(g, k, name, options.get(name, {}))
        except RespectPassError as exc:
            logging.info("%s K=%d %s: %s", g.name, k, name, exc)
    if "multiorder@t" in names and "respect" in results:
        results["multiorder@t"] = run_one(g, k, "multiorder@t", {"time_budget_s": results["respect"].solve_seconds})
    if "respect-net" in names and has_unique_order(g):
        results["respect-net"] = run_one(g, k, "respect-net", {"one_order_shortcut": False})
    exact = results.get("exact")
    if "respect+exact" in names and exact and (exact.solve_seconds > hard_s or not exact.optimal):
        results["respect+exact"] = run_one(g, k, "respect+exact", options.get("exact", {}))
    return results


def _row(case: dict, r: RunRecord, base: RunRecord, one_tpu_ms: float, best_ms: float, exact: RunRecord | None) -> dict:
    """One CSV row: the graph's columns ``case`` and ``r``'s figures against the compiler's split (``base``), one
    TPU, the best plan of the (graph, K) and ``exact``."""
    return {
        **case,
        "K": r.k,
        "scheduler": r.scheduler,
        "bottleneck_ms": round(r.period_ms, 4),
        "latency_ms": round(r.latency_ms, 4),
        "speedup_vs_compiler": round(base.period_ms / r.period_ms, 4),
        "speedup_vs_1tpu": round(one_tpu_ms / r.period_ms, 4),
        "gap_to_exact_pct": round(100 * (r.period_ms / exact.period_ms - 1), 3) if exact else "",
        "gap_to_best_pct": round(100 * (r.period_ms / best_ms - 1), 3),
        "exact_optimal": bool(exact.optimal) if exact else "",
        "proved_optimal": bool(r.optimal),
        "solve_s": round(r.solve_seconds, 4),
    }


def bench(pairs: list[tuple[str, OpGraph]], ks: list[int], names: list[str], options: dict, hard_s: float) -> list[dict]:
    """The CSV rows of every (suite, graph) pair, K in ``ks`` and scheduler in ``names``."""
    rows = []
    if pairs and any(n.startswith("respect") for n in names):  # import torch and load the checkpoint untimed
        run_one(pairs[0][1], min(ks), "respect-net", {"one_order_shortcut": False})
    for suite, g in pairs:
        one_tpu = period_ms(g, (0,) * g.num_ops, 1, USB)
        case = {
            "suite": suite,
            "graph": g.name,
            "ops": g.num_ops,
            "params_mib": round(g.total_param_bytes / 2**20, 2),
            "one_order": has_unique_order(g),
        }
        for k in ks:
            results = run_all(g, k, names, options, hard_s)
            if "compiler" not in results:
                continue
            best = min(r.period_ms for r in results.values())
            rows += [_row(case, r, results["compiler"], one_tpu, best, results.get("exact")) for r in results.values()]
            print(f"{g.name:<28} K={k}  " + "  ".join(f"{n}={r.period_ms:.3f}" for n, r in results.items()), flush=True)
    return rows


def geomean(values) -> float:
    values = [v for v in values if v > 0]
    return math.exp(statistics.fmean(math.log(v) for v in values)) if values else float("nan")


def summary(rows: list[dict], names: list[str]) -> str:
    """Per-scheduler summary and the three headline comparisons, as markdown."""
    lines = [
        "| suite | scheduler | runs | geo-mean speedup vs compiler | max speedup | geo-mean speedup vs 1 TPU | "
        "mean gap to exact % | max gap % | at exact's optimum | median solve s |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for suite in SUITES:
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
                f"{statistics.median(r['solve_s'] for r in rs):.4f} |"
                if gaps
                else f"| {suite} | {name} | {len(rs)} | {geomean(r['speedup_vs_compiler'] for r in rs):.3f} | "
                f"{max(r['speedup_vs_compiler'] for r in rs):.3f} | {geomean(r['speedup_vs_1tpu'] for r in rs):.3f} | "
                f"- | - | - | {statistics.median(r['solve_s'] for r in rs):.4f} |"
            )
    return "\n".join(lines)


def _by(rows: list[dict], suite: str) -> dict[tuple[str, int], dict[str, dict]]:
    """{(graph, K): {scheduler: row}} for one suite."""
    out: dict[tuple[str, int], dict[str, dict]] = {}
    for r in rows:
        if r["suite"] == suite:
            out.setdefault((r["graph"], r["K"]), {})[r["scheduler"]] = r
    return out


def _ratio(runs: dict[str, dict], name: str = "respect") -> float | None:
    """exact's time-to-proof over ``name``'s time where ``name`` matches exact's proven optimum, else None."""
    ex, r = runs.get("exact"), runs.get(name)
    if ex and r and ex["exact_optimal"] and r["gap_to_exact_pct"] != "" and r["gap_to_exact_pct"] <= 1e-6:
        return ex["solve_s"] / max(r["solve_s"], 1e-6)
    return None


def _gap(r: dict | None) -> str:
    return "-" if r is None or r["gap_to_exact_pct"] == "" else f"{r['gap_to_exact_pct']:.2f}"


def per_model_k(rows: list[dict], suite: str = "real") -> str:
    """One line per (model, K): exact's optimum beside respect and today's tools."""
    lines = [
        "| model | ops | K | optimum ms | exact proof s | respect gap % | respect ms | exact/respect time | "
        "respect speedup vs compiler | profiling gap % | dp gap % | multiorder gap % |",
        "|" + "---|" * 12,
    ]
    for (graph, k), runs in sorted(_by(rows, suite).items()):
        ex, rs = runs.get("exact"), runs.get("respect")
        if not (ex and rs):
            continue
        ratio = _ratio(runs)
        lines.append(
            f"| {graph} | {rs['ops']} | {k} | {ex['bottleneck_ms']:.3f}{'' if ex['exact_optimal'] else ' (not proven)'} | "
            f"{ex['solve_s']:.2f} | {_gap(rs)} | {1e3 * rs['solve_s']:.1f} | "
            f"{f'{ratio:.0f}x' if ratio else 'not matched'} | {rs['speedup_vs_compiler']:.2f} | "
            f"{_gap(runs.get('profiling'))} | {_gap(runs.get('dp'))} | {_gap(runs.get('multiorder'))} |"
        )
    return "\n".join(lines)


def per_model(rows: list[dict], suite: str = "real") -> str:
    """One line per model over all K: respect's gap, speedup and time ratio beside the other schedulers."""
    lines = [
        "| model | ops | one order | params MiB | respect gap % mean / max | respect speedup vs compiler geo-mean / max | "
        "exact's speedup geo-mean | profiling / dp / multiorder mean gap % | exact proof s median / max | "
        "respect ms median / max | exact/respect time geo-mean (matched K) |",
        "|" + "---|" * 11,
    ]
    models: dict[str, list[dict[str, dict]]] = {}
    for (graph, _), by_name in sorted(_by(rows, suite).items()):
        if "exact" in by_name and "respect" in by_name:
            models.setdefault(graph, []).append(by_name)
    for graph, runs in models.items():
        rs = [r["respect"] for r in runs]
        ex = [r["exact"] for r in runs]
        gaps = [r["gap_to_exact_pct"] for r in rs]
        ratios = [x for x in (_ratio(r) for r in runs) if x]
        others = " / ".join(
            f"{statistics.fmean(r[n]['gap_to_exact_pct'] for r in runs):.2f}" if all(n in r for r in runs) else "-"
            for n in ("profiling", "dp", "multiorder")
        )
        lines.append(
            f"| {graph} | {rs[0]['ops']} | {'yes' if rs[0].get('one_order') is True else 'no'} | "
            f"{rs[0]['params_mib']:.1f} | "
            f"{statistics.fmean(gaps):.3f} / {max(gaps):.2f} | "
            f"{geomean(r['speedup_vs_compiler'] for r in rs):.3f} / {max(r['speedup_vs_compiler'] for r in rs):.2f} | "
            f"{geomean(r['speedup_vs_compiler'] for r in ex):.3f} | {others} | "
            f"{statistics.median(r['solve_s'] for r in ex):.2f} / {max(r['solve_s'] for r in ex):.2f} | "
            f"{1e3 * statistics.median(r['solve_s'] for r in rs):.1f} / {1e3 * max(r['solve_s'] for r in rs):.1f} | "
            f"{f'{geomean(ratios):.0f}x' if ratios else '-'} ({len(ratios)}/{len(runs)}) |"
        )
    return "\n".join(lines)


def family(graph: str) -> str:
    """The generator family of a synthetic graph name (``<family>_<ops>_s<seed>``)."""
    return graph.rsplit("_", 2)[0]


def _mean_gap(runs: list[dict[str, dict]], n: str) -> str:
    """Mean gap to the best plan of scheduler ``n`` over the runs it took part in."""
    vals = [r[n]["gap_to_best_pct"] for r in runs if n in r]
    return f"{statistics.fmean(vals):.2f}" if vals else "-"


def _versus(runs: list[dict[str, dict]], n: str) -> str:
    """Mean % by which respect's period is lower than ``n``'s."""
    vals = [100 * (1 - r["respect"]["bottleneck_ms"] / r[n]["bottleneck_ms"]) for r in runs if n in r and "respect" in r]
    return f"{statistics.fmean(vals):+.2f}" if vals else "-"


def families(rows: list[dict], suites: tuple[str, ...] = ("synthetic", "large")) -> str:
    """Per synthetic family: mean gap to the best plan found, and respect's period against dp and multiorder@t."""
    names = ("dp", "multiorder", "multiorder@t", "respect", "exact")
    lines = [
        "| suite | family | runs | max ops | "
        + " | ".join(f"{n} gap to best %" for n in names)
        + " | respect vs dp % | respect vs multiorder@t % | exact proved |",
        "|" + "---|" * (len(names) + 7),
    ]
    for suite in suites:
        groups: dict[str, list[dict[str, dict]]] = {}
        for (graph, _), by_name in sorted(_by(rows, suite).items()):
            groups.setdefault(family(graph), []).append(by_name)
        for fam, runs in sorted(groups.items()):
            proved = sum(1 for r in runs if "exact" in r and r["exact"]["exact_optimal"])
            lines.append(
                f"| {suite} | {fam} | {len(runs)} | {max(next(iter(r.values()))['ops'] for r in runs)} | "
                + " | ".join(_mean_gap(runs, n) for n in names)
                + f" | {_versus(runs, 'dp')} | {_versus(runs, 'multiorder@t')} | "
                f"{proved}/{len(runs)} |"
            )
    return "\n".join(lines)


def warm_start(rows: list[dict]) -> str:
    """Hard cases: cold exact against exact warm-started from respect, same time limit."""
    lines = ["| suite | graph | K | cold exact s | proved | respect+exact s | proved | cold / warm time |", "|" + "---|" * 8]
    for suite in SUITES:
        for (graph, k), runs in sorted(_by(rows, suite).items()):
            cold, warm = runs.get("exact"), runs.get("respect+exact")
            if cold and warm:
                ratio = cold["solve_s"] / max(warm["solve_s"], 1e-6)
                ge = ">= " if not cold["exact_optimal"] and warm["proved_optimal"] else ""
                lines.append(
                    f"| {suite} | {graph} | {k} | {cold['solve_s']:.1f} | {cold['exact_optimal']} | "
                    f"{warm['solve_s']:.1f} | {warm['proved_optimal']} | {ge}{ratio:.1f}x |"
                )
    return "\n".join(lines) if len(lines) > 2 else "No hard case: cold exact proved every run within the threshold."


def headline(rows: list[dict], names: list[str]) -> str:
    """The paper's three comparisons, computed from the rows."""
    out = []
    real = [r for r in rows if r["suite"] == "real"]
    best = max((r for r in real if r["scheduler"] != "compiler"), key=lambda r: r["speedup_vs_compiler"], default=None)
    if best:
        out.append(
            f"1. Speedup over the compiler's segmentation (predicted, real models): up to "
            f"{best['speedup_vs_compiler']:.2f}x ({best['scheduler']} on {best['graph']}, K={best['K']}); "
            "paper: ~2.5x on device."
        )
    runs = {key: v for suite in SUITES for key, v in _by(rows, suite).items()}
    for name in names:
        if name in ("exact", "compiler", "respect+exact"):
            continue
        matched = [x for x in (_ratio(r, name) for r in runs.values()) if x]
        if matched:
            out.append(
                f"2. {name}: where it matches exact's proven optimum ({len(matched)} runs) it is "
                f"{geomean(matched):.0f}x faster than exact (geo-mean), up to {max(matched):.0f}x; paper: up to 930x."
            )
    for name in names:
        gaps = {
            s: [
                r["gap_to_exact_pct"]
                for r in rows
                if r["scheduler"] == name and r["suite"] == s and r["gap_to_exact_pct"] != "" and r["exact_optimal"]
            ]
            for s in SUITES
        }
        if name not in ("exact", "compiler", "respect+exact") and gaps["real"] and gaps["synthetic"]:
            out.append(
                f"3. {name}: mean gap to the proven optimum {statistics.fmean(gaps['synthetic']):.2f}% on synthetic "
                f"graphs, {statistics.fmean(gaps['large']):.2f}% on large ones ({len(gaps['large'])} proven runs), "
                f"{statistics.fmean(gaps['real']):.2f}% on real models."
                if gaps["large"]
                else f"3. {name}: mean gap to the proven optimum {statistics.fmean(gaps['synthetic']):.2f}% on synthetic "
                f"graphs, {statistics.fmean(gaps['real']):.2f}% on real models."
            )
    return "\n".join(out)


def goals(rows: list[dict]) -> str:
    """respect against the goals of its issue (quality and time on the zoo, large graphs, warm start)."""
    real = _by(rows, "real")
    rs = [v for v in real.values() if "respect" in v and "exact" in v and v["exact"]["exact_optimal"]]
    if not rs:
        return ""
    gaps = [v["respect"]["gap_to_exact_pct"] for v in rs]
    ratios = [x for x in (_ratio(v) for v in rs) if x]
    hard = [x for x in (_ratio(v) for v in rs if v["exact"]["solve_s"] > 10) if x]
    largest = max(rs, key=lambda v: v["respect"]["ops"])["respect"]["graph"]
    big_ms = [1e3 * v["respect"]["solve_s"] for (g, _), v in real.items() if g == largest and "respect" in v]
    net_ms = [1e3 * v["respect-net"]["solve_s"] for (g, _), v in real.items() if g == largest and "respect-net" in v]
    nets = [v["respect-net"] for v in rs if "respect-net" in v]
    out = [
        f"- zoo, K=2..8 ({len(rs)} proven runs): respect's gap to the optimum mean {statistics.fmean(gaps):.3f}%, "
        f"worst {max(gaps):.2f}%; at the optimum in {sum(g <= 1e-6 for g in gaps)}/{len(gaps)} (goal: <= 1% / 3%).",
        f"- largest zoo graph ({largest}): respect {statistics.median(big_ms):.1f} ms median, {max(big_ms):.1f} ms max "
        f"over K (goal: <= 20 ms on one core)"
        + (
            f"; with the network forced (features, policy, decoding, split, refine): {statistics.median(net_ms):.1f} ms "
            f"median, {max(net_ms):.1f} ms max."
            if net_ms
            else "."
        ),
        *(
            [
                f"- the policy path forced on the {len(nets)} zoo runs with one topological order: gap to the optimum "
                f"mean {statistics.fmean(r['gap_to_exact_pct'] for r in nets):.3f}%, worst "
                f"{max(r['gap_to_exact_pct'] for r in nets):.2f}%."
            ]
            if nets
            else []
        ),
        f"- exact's time-to-proof over respect's time where respect is optimal ({len(ratios)}/{len(rs)} runs): "
        f"{geomean(ratios):.0f}x geo-mean (goal: >= 100x)"
        + (
            f"; where exact needed > 10 s ({len(hard)} runs): {geomean(hard):.0f}x (goal: >= 1000x)."
            if hard
            else "; exact never needed more than 10 s on the zoo."
        ),
    ]
    every = {key: v for suite in SUITES for key, v in _by(rows, suite).items()}
    slow = [x for x in (_ratio(v) for v in every.values() if v.get("exact", {}).get("solve_s", 0) > 10) if x]
    if slow:
        out.append(
            f"- all suites, where exact needed > 10 s and respect found the optimum ({len(slow)} runs): "
            f"{geomean(slow):.0f}x geo-mean, {min(slow):.0f}x to {max(slow):.0f}x."
        )
    warm = [(v["exact"], v["respect+exact"]) for v in every.values() if "respect+exact" in v]
    for label, pairs in (
        ("one topological order (proof without CP-SAT)", [w for w in warm if w[1]["one_order"] is True]),
        ("CP-SAT warm-started from respect", [w for w in warm if w[1]["one_order"] is not True]),
    ):
        if not pairs:
            continue
        both = [c["solve_s"] / max(w["solve_s"], 1e-6) for c, w in pairs if c["exact_optimal"] and w["proved_optimal"]]
        only = sum(1 for c, w in pairs if w["proved_optimal"] and not c["exact_optimal"])
        lost = sum(1 for c, w in pairs if c["exact_optimal"] and not w["proved_optimal"])
        out.append(
            f"- respect+exact on {len(pairs)} hard runs, {label}: both proved {len(both)}, cold/warm time "
            f"{geomean(both):.1f}x geo-mean ({min(both, default=0):.1f}x to {max(both, default=0):.1f}x); "
            f"proved only warm: {only}; only cold: {lost}; neither: "
            f"{sum(1 for c, w in pairs if not (c['exact_optimal'] or w['proved_optimal']))}."
        )
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
    for ax in axes.flat[len(models) :]:
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
    for key in (
        "params_mib",
        "bottleneck_ms",
        "latency_ms",
        "speedup_vs_compiler",
        "speedup_vs_1tpu",
        "solve_s",
        "gap_to_exact_pct",
        "gap_to_best_pct",
    ):
        out[key] = float(row[key]) if row.get(key, "") != "" else ""
    for key in ("exact_optimal", "proved_optimal", "one_order"):
        out[key] = {"True": True, "False": False}.get(row.get(key, ""), row.get(key, ""))
    return out


def report(rows: list[dict], names: list[str], title: str) -> str:
    """bench.md: summary, headline comparisons, goals, per-model tables, families, warm starts."""
    parts = [title, summary(rows, names), headline(rows, names), goals(rows)]
    if any(r["suite"] == "real" for r in rows):
        parts += ["Per zoo model, K = 2..8:", per_model(rows), _details("Per zoo model and K", per_model_k(rows))]
    if any(r["suite"] != "real" for r in rows):
        parts += [
            "Synthetic families (gap to the best plan any scheduler found; 'respect vs X' = how much lower "
            "respect's period is, mean %):",
            families(rows),
        ]
    if any(r["scheduler"] == "respect+exact" for r in rows):
        parts += [
            _details("Hard cases (cold exact over the threshold or unproven): warm start from respect", warm_start(rows))
        ]
    return "\n\n".join(p for p in parts if p) + "\n"


def _details(summary_line: str, body: str) -> str:
    """A collapsed markdown section (GitHub renders the table inside)."""
    return f"<details><summary>{summary_line}</summary>\n\n{body}\n\n</details>"


README_BEGIN, README_END = "<!-- tools/bench.py: begin -->", "<!-- tools/bench.py: end -->"


def readme_block(path: Path) -> tuple[str, int, int]:
    """The text of ``path`` and where its bench block starts and ends; one error line if it has none."""
    try:
        doc = path.read_text()
    except OSError as exc:
        raise SystemExit(f"bench.py: cannot read --readme {path}: {exc.strerror}") from None
    a, b = doc.find(README_BEGIN), doc.find(README_END)
    if a < 0 or b < a:
        raise SystemExit(f"bench.py: {path} has no '{README_BEGIN}' ... '{README_END}' block")
    return doc, a + len(README_BEGIN), b


def update_readme(path: Path, text: str) -> None:
    """Replace the block between the bench markers of ``path`` with ``text``."""
    doc, a, b = readme_block(path)
    path.write_text(doc[:a] + "\n" + text + doc[b:])


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="seconds: small committed models, 4 small synthetic graphs, K=2,4")
    ap.add_argument("--ks", default=None, help="K values, e.g. 2-8 or 2,4 (default 2-8; quick: 2,4)")
    ap.add_argument("--schedulers", default=",".join(DEFAULT_SCHEDULERS))
    ap.add_argument("--models", default=None, help="comma-separated zoo stems (default: all)")
    ap.add_argument(
        "--synthetic", type=int, default=None, help="number of synthetic graphs of 20-300 ops (default 12; quick: 4)"
    )
    ap.add_argument(
        "--large", type=int, default=None, help="number of synthetic graphs of 400-800 ops (default 6; quick: 0)"
    )
    ap.add_argument("--time-limit", type=float, default=None, help="exact's time limit per run (default 60; quick: 10)")
    ap.add_argument("--hard-s", type=float, default=2.0, help="run respect+exact where cold exact took longer (default 2)")
    ap.add_argument("--out", default=str(ROOT / "results"), help="output directory")
    ap.add_argument("--from-csv", default=None, metavar="CSV", help="only re-render the tables and plot from a saved CSV")
    ap.add_argument("--readme", default=None, metavar="MD", help="also write the report between the bench markers of MD")
    args = ap.parse_args()
    for flag in ("synthetic", "large", "hard_s", "time_limit"):
        if getattr(args, flag) is not None and getattr(args, flag) < 0:
            ap.error(f"--{flag.replace('_', '-')} must be >= 0, got {getattr(args, flag)}")
    if args.readme:
        readme_block(Path(args.readme))  # before any work: a bad --readme must not cost a whole run
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s: %(message)s")
    ks = parse_ks(args.ks or ("2,4" if args.quick else "2-8"))
    names = [n for n in args.schedulers.split(",") if n in SCHEDULERS or n in DERIVED]
    options = {"exact": {"time_limit_s": args.time_limit or (10.0 if args.quick else 60.0)}}
    t0 = time.perf_counter()
    if args.from_csv:
        rows = [_typed(r) for r in csv.DictReader(open(args.from_csv))]
        names = [n for n in names if any(r["scheduler"] == n for r in rows)]
        meta_path = Path(args.from_csv).with_name(Path(args.from_csv).stem + "_meta.json")
        meta = (
            json.loads(meta_path.read_text())
            if meta_path.exists()
            else {"date": str(date.fromtimestamp(Path(args.from_csv).stat().st_mtime)), "machine": machine()}
        )
    else:
        pairs = graphs(
            args.quick,
            args.synthetic if args.synthetic is not None else (4 if args.quick else 12),
            args.large if args.large is not None else (0 if args.quick else 6),
            args.models.split(",") if args.models else None,
        )
        rows = bench(pairs, ks, names, options, args.hard_s)
        meta = {
            "date": str(date.today()),
            "machine": machine(),
            "commit": commit(),
            "command": " ".join(["python -m tools.bench", *sys.argv[1:]]),
            "wall_min": round((time.perf_counter() - t0) / 60, 1),
        }
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    stem = "bench_quick" if args.quick else "bench"
    with open(out / f"{stem}.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=FIELDS)
        w.writeheader()
        w.writerows(rows)
    if not args.from_csv:
        (out / f"{stem}_meta.json").write_text(json.dumps(meta, indent=1) + "\n")
    title = (
        f"Scheduler benchmark run on {meta['date']} ({meta['machine']}"
        + (f"; commit {meta['commit']}; `{meta['command']}`; {meta['wall_min']} min" if "commit" in meta else "")
        + "). Every time and speedup is *predicted* by the USB cost model; solve times are wall-clock."
    )
    text = report(rows, names, title)
    (out / f"{stem}.md").write_text(text)
    if args.readme:
        update_readme(Path(args.readme), text)
    if any(r["suite"] == "real" for r in rows):
        plot(rows, [n for n in names if n not in DERIVED], out / f"{stem}_speedup.png")
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
