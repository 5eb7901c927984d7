"""Hard-graph benchmark: ``respect`` on NASNet-style graphs (many parallel branches per cell) against
``multiorder`` given the same time and ``exact`` given ``--time-limit`` seconds (default 120).

For each generator graph (family ``nas_cell`` by default, ~400/600/800 ops, 2 seeds) and K it runs

* ``respect``: the default call (``get_scheduler("respect")`` with its defaults);
* ``respect+extra``: the same with ``extra_samples`` = :data:`EXTRA_SAMPLES` (``--extra-samples``);
* ``multiorder@t``: ``multiorder`` with ``time_budget_s`` = the time the default ``respect`` took on that
  (graph, K), as ``tools/bench.py`` does;
* ``exact``: CP-SAT with ``--time-limit`` seconds and 2 workers; its best plan's period and whether it
  was proved optimal (``exact_optimal``: the re-costed plan meets the solver's bound;
  ``relaxation_optimal``: CP-SAT closed its linear relaxation), and how far its bound is (``bound_gap_pct``).

Every run goes through :func:`tools.common.run_scheduler`; periods are the device model's (USB spec: the
slowest stage or the shared host link, :func:`hardware.pipeline_period_ms`). Per family and K
it reports the mean and max gap (%) of each scheduler to exact's best plan and of ``respect`` to
``multiorder@t``, and the issue-13 goals case by case. Writes ``results/bench_hard.csv`` and
``results/bench_hard.md`` and prints the table.

    python -m tools.bench_hard                        # nas_cell, 400/600/800 ops x 2 seeds, K = 2,4,8, exact 120 s
    python -m tools.bench_hard --sizes 400 --ks 4 --time-limit 10
"""

from __future__ import annotations

import argparse
import csv
import logging
import statistics
import sys
import time
from datetime import datetime
from pathlib import Path
from typing import Any

from hardware import USB
from respect_pass.generator import generate
from respect_pass.schedulers import get_scheduler
from tflite_io import OpGraph
from tools.common import ROOT, RunRecord, commit, machine, parse_ks, run_scheduler

__all__ = ["EXTRA_SAMPLES", "SCHEDULERS", "bench", "summary", "per_case", "report", "main"]

SCHEDULERS = ("respect", "respect+extra", "multiorder@t", "exact")
FIELDS = [
    "family",
    "graph",
    "ops",
    "seed",
    "gen_s",
    "K",
    "scheduler",
    "period_ms",
    "latency_ms",
    "solve_s",
    "gap_to_exact_pct",
    "gap_to_best_pct",
    "exact_optimal",
    "relaxation_optimal",
    "refined_rounds",
    "bound_gap_pct",
    "bound_ms",
]


#: respect's extra candidate budget in this benchmark (``--extra-samples``; 24 = 3x the 8 default samples)
EXTRA_SAMPLES = 24


def _run(name: str, graph: OpGraph, k: int, **kwargs: Any) -> RunRecord:
    """One run of the scheduler behind ``name`` under the USB spec (:func:`tools.common.run_scheduler`)."""
    if name == "respect+extra":
        kwargs = {"extra_samples": EXTRA_SAMPLES, **kwargs}
    scheduler = "multiorder" if name == "multiorder@t" else "respect" if name.startswith("respect") else name
    return run_scheduler(graph, k, USB, scheduler, label=name, **kwargs)


def _bound(r: RunRecord) -> tuple[float | str, float | str]:
    """(gap of ``r``'s period above its lower bound in %, the bound in ms); "" where it has no positive bound."""
    bound = r.lower_bound_ms
    if bound is None or bound <= 0:
        return "", ""
    return round(100 * (r.period_ms / bound - 1), 3), round(bound, 5)


def _case_rows(case: dict, res: dict[str, RunRecord]) -> list[dict]:
    """The CSV rows of one (graph, K): every scheduler's figures, gaps to exact's plan and to the best one."""
    ex = res["exact"]
    best = min(r.period_ms for r in res.values())
    rows = []
    for name in SCHEDULERS:
        r = res[name]
        bound_gap, bound_ms = _bound(r)
        rows.append(
            {
                **case,
                "K": r.k,
                "scheduler": name,
                "period_ms": round(r.period_ms, 5),
                "latency_ms": round(r.latency_ms, 5),
                "solve_s": round(r.solve_seconds, 3),
                "gap_to_exact_pct": round(100 * (r.period_ms / ex.period_ms - 1), 3),
                "gap_to_best_pct": round(100 * (r.period_ms / best - 1), 3),
                "exact_optimal": bool(ex.optimal),
                "relaxation_optimal": bool(ex.stats.get("relaxation_optimal", 0)),
                "refined_rounds": r.stats.get("refined_rounds", ""),
                "bound_gap_pct": bound_gap,
                "bound_ms": bound_ms,
            }
        )
    return rows


def bench(family: str, sizes: list[int], seeds: list[int], ks: list[int], time_limit: float) -> list[dict]:
    """The CSV rows of every generated graph (``family``, ``sizes`` x ``seeds``) and K."""
    rows = []
    get_scheduler("respect")(generate(family, 40, 0), 2, USB)  # load the checkpoint and warm caches, untimed
    for n in sizes:
        for seed in seeds:
            t0 = time.perf_counter()
            g = generate(family, n, seed)
            case = {
                "family": family,
                "graph": g.name,
                "ops": g.num_ops,
                "seed": seed,
                "gen_s": round(time.perf_counter() - t0, 3),
            }
            for k in ks:
                res = {"respect": _run("respect", g, k)}
                res["respect+extra"] = _run("respect+extra", g, k)
                res["multiorder@t"] = _run("multiorder@t", g, k, time_budget_s=res["respect"].solve_seconds)
                res["exact"] = _run("exact", g, k, time_limit_s=time_limit)
                rows += _case_rows(case, res)
                print(
                    f"{g.name:<24} n={g.num_ops} K={k}  "
                    + "  ".join(f"{name}={res[name].period_ms:.4f}ms/{res[name].solve_seconds:.1f}s" for name in SCHEDULERS)
                    + f"  exact proved={bool(res['exact'].optimal)}",
                    flush=True,
                )
    return rows


def _pct(values: list[float]) -> str:
    return f"{statistics.fmean(values):+.2f} / {max(values):+.2f}" if values else "-"


def _by_case(rows: list[dict]) -> dict[tuple, dict[str, dict]]:
    out: dict[tuple, dict[str, dict]] = {}
    for r in rows:
        out.setdefault((r["family"], r["K"], r["graph"], r["seed"]), {})[r["scheduler"]] = r
    return out


def _row(label: str, k: str, runs: list[dict[str, dict]]) -> str:
    gap = {n: [v[n]["gap_to_exact_pct"] for v in runs] for n in SCHEDULERS}
    vs_mo = [100 * (v["respect"]["period_ms"] / v["multiorder@t"]["period_ms"] - 1) for v in runs]
    proved = sum(1 for v in runs if v["exact"]["exact_optimal"])
    bound = [float(v["exact"]["bound_gap_pct"]) for v in runs if v["exact"]["bound_gap_pct"] != ""]
    # the best plan any scheduler found, against exact's lower bound: how far from proven the case still is
    best_vs_bound = [
        100 * (min(r["period_ms"] for r in v.values()) / float(v["exact"]["bound_ms"]) - 1)
        for v in runs
        if v["exact"]["bound_ms"] != ""
    ]
    secs = statistics.median(v["respect"]["solve_s"] for v in runs)
    within = sum(1 for x in gap["respect"] if x <= 1.0)
    return (
        f"| {label} | {k} | {len(runs)} | {_pct(gap['respect'])} | {within}/{len(runs)} | {_pct(gap['respect+extra'])} | "
        f"{_pct(gap['multiorder@t'])} | {_pct(vs_mo)} | {sum(1 for x in vs_mo if x > 1e-6)} | {proved}/{len(runs)} | "
        f"{_pct(bound)} | {_pct(best_vs_bound)} | {secs:.2f} |"
    )


def summary(rows: list[dict]) -> str:
    """Per (family, K): mean / max gaps over the graphs."""
    cases = _by_case(rows)
    lines = [
        "| family | K | cases | respect gap to exact % | respect within 1% of exact | respect+extra gap to exact % "
        "| multiorder@t gap to exact % | respect vs multiorder@t % | cases respect worse than multiorder@t "
        "| exact proved | exact's period above its lower bound % | best plan above exact's bound % | respect s (median) |",
        "|" + "---|" * 13,
    ]
    for fam, k in sorted({(c[0], c[1]) for c in cases}):
        lines.append(_row(fam, str(k), [v for c, v in cases.items() if c[:2] == (fam, k)]))
    lines.append(_row("**all**", "", list(cases.values())))
    return "\n".join(lines)


def per_case(rows: list[dict]) -> str:
    lines = [
        "| graph | ops | K | exact ms (proved) | respect ms | respect+extra ms | multiorder@t ms | respect s | "
        "respect+extra s | exact s |",
        "|" + "---|" * 10,
    ]
    cases = sorted(_by_case(rows).items(), key=lambda kv: (kv[1]["exact"]["ops"], kv[0][3], kv[0][1]))
    for (_, k, graph, _), v in cases:
        ex = v["exact"]
        lines.append(
            f"| {graph} | {ex['ops']} | {k} | {ex['period_ms']:.4f} ({'yes' if ex['exact_optimal'] else 'no'}) | "
            f"{v['respect']['period_ms']:.4f} | {v['respect+extra']['period_ms']:.4f} | "
            f"{v['multiorder@t']['period_ms']:.4f} | {v['respect']['solve_s']:.2f} | "
            f"{v['respect+extra']['solve_s']:.2f} | {ex['solve_s']:.1f} |"
        )
    return "\n".join(lines)


def report(rows: list[dict], meta: dict) -> str:
    gens = {(r["graph"], r["seed"]): r["gen_s"] for r in rows}
    return "\n".join(
        [
            "# Hard graphs: respect on NASNet-style cells",
            "",
            f"Run {meta['date']} on {meta['machine']}; commit {meta['commit']}; `{meta['command']}`; "
            f"wall {meta['wall_min']} min (graph generation {sum(gens.values()):.1f} s for {len(gens)} graphs). "
            "Periods are *predicted* by the USB device model; solve times are wall-clock on a shared machine.",
            "",
            "Gaps are `100 * (period / exact's period - 1)` against exact's best plan within the time limit "
            f"({meta['time_limit']:g} s, {meta['workers']} workers; negative: better than exact's plan), "
            "given as mean / max over the graphs. `respect vs multiorder@t`: `100 * (respect's period / "
            "multiorder@t's - 1)`, multiorder given the default respect's wall time (positive: respect is worse). "
            f"`respect+extra`: `--extra-samples {EXTRA_SAMPLES}`. "
            "`exact proved`: the re-costed plan meets CP-SAT's bound; where it does not, the next column says how "
            "far exact's period is above the lower bound it reports (`lower_bound_ms`).",
            "",
            summary(rows),
            "",
            "## Per case",
            "",
            per_case(rows),
            "",
        ]
    )


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--family", default="nas_cell")
    ap.add_argument("--sizes", default="400,600,800", help="op counts (default 400,600,800)")
    ap.add_argument("--seeds", default="0,1", help="generator seeds (default 0,1)")
    ap.add_argument("--ks", default="2,4,8", help="K values, e.g. 2,4,8 or 2-8")
    ap.add_argument("--time-limit", type=float, default=120.0, help="exact's time limit per run in s (default 120)")
    ap.add_argument("--out", default=str(ROOT / "results"), help="output directory")
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s: %(message)s")
    t0 = time.perf_counter()
    rows = bench(
        args.family,
        [int(x) for x in args.sizes.split(",")],
        [int(x) for x in args.seeds.split(",")],
        parse_ks(args.ks),
        args.time_limit,
    )
    meta = {
        "date": datetime.now().strftime("%Y-%m-%d %H:%M"),
        "machine": machine(),
        "commit": commit(),
        "command": " ".join(["python -m tools.bench_hard", *sys.argv[1:]]),
        "wall_min": round((time.perf_counter() - t0) / 60, 1),
        "time_limit": args.time_limit,
        "workers": 2,
    }
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    with open(out / "bench_hard.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=FIELDS)
        w.writeheader()
        w.writerows(rows)
    text = report(rows, meta)
    (out / "bench_hard.md").write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
