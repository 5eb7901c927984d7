"""Pool benchmark: several zoo models on N Edge TPUs, against the best plan that gives each model TPUs of its own.

For pairs and triples of zoo models and N = 2..8 TPUs (and N = 1 for Coral's two reference pairs), the pool
plan (:func:`respect_pass.pool.plan_pool`: own groups with segments and replicas, co-compiled or
separately compiled shared groups) is set beside the best plan in which every model has TPUs of its own
(every split of N, replicas included; none where N is below the number of models). Every figure is
*predicted* by the device model (``hardware/``, the ``usb`` preset unless ``--spec``; co-compilation terms
fitted by ``tools/fit_cocompile.py`` to Coral's reference pairs), not measured. For every row the pool is also
simulated request by request (:func:`hardware.pool_sim.simulate_pool`, 5% jitter) and each model's simulated
throughput compared with the prediction; for some rows the pool's files are written and run through
``run_pipeline DIR --backend sim --json`` (each model's segments chained bit-exact against it). Writes
``results/<name>.csv`` and ``results/<name>.md`` (``--name``, default ``bench_pool``).

    python -m tools.bench_pool                       # the default combinations, N = 2..8
    python -m tools.bench_pool --ns 2,4 --run-every 2
    python -m tools.bench_pool --spec usb-separate --name bench_pool_separate
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

from hardware import EdgeTpuSpec, load_spec
from hardware.pool_sim import simulate_pool
from respect_pass.partition import load_model, planning_spec
from respect_pass.pool import PoolEntry, PoolPlan, plan_pool
from respect_pass.pool_doc import pool_files
from tflite_io import TfliteModel, write_files

from .common import ROOT, commit, machine, parse_ks

__all__ = ["PoolRow", "main"]

SHORT = {
    "mobilenet_224_int8": "MNv1",
    "mobilenetv2_224_int8": "MNv2",
    "inceptionv1_224_int8": "IncV1",
    "inceptionv4_299_int8": "IncV4",
    "resnet50_224_int8": "R50",
    "densenet121_224_int8": "D121",
    "unet_mnv2_128_int8": "UNet",
    "deeplabv3_mnv2_513_int8": "DLv3",
}
#: (models, weights): the combinations planned at every N
COMBOS: tuple[tuple[tuple[str, ...], tuple[float, ...]], ...] = (
    (("mobilenet_224_int8", "mobilenetv2_224_int8"), (1, 1)),
    (("inceptionv1_224_int8", "inceptionv4_299_int8"), (1, 1)),
    (("mobilenetv2_224_int8", "inceptionv4_299_int8"), (1, 1)),
    (("mobilenetv2_224_int8", "resnet50_224_int8"), (1, 1)),
    (("densenet121_224_int8", "mobilenet_224_int8"), (1, 4)),
    (("unet_mnv2_128_int8", "inceptionv1_224_int8"), (1, 1)),
    (("mobilenet_224_int8", "mobilenetv2_224_int8", "inceptionv1_224_int8"), (1, 1, 1)),
    (("mobilenetv2_224_int8", "inceptionv1_224_int8", "inceptionv4_299_int8"), (1, 1, 1)),
    (("resnet50_224_int8", "densenet121_224_int8", "mobilenetv2_224_int8"), (2, 1, 1)),
)
#: Coral's reference pairs on one TPU (pycoral's cocompilation_reference CSV, x86 + USB 3): ms per pair
REFERENCE_PAIRS = {
    ("mobilenet_224_int8", "mobilenetv2_224_int8"): (22.61, 7.36),
    ("inceptionv1_224_int8", "inceptionv4_299_int8"): (115.71, 100.98),
}


@dataclass(frozen=True)
class PoolRow:
    """One (models, weights, N): the pool's common rate (the minimum of throughput / weight, per second)
    against the best with every model on TPUs of its own, both predicted; the simulated check."""

    models: str
    weights: str
    tpus: int
    tpus_used: int
    rate: float
    own_rate: float | None
    groups: str
    bound: str
    sim_off_pct: float
    run_verified: str
    run_off_pct: float | None
    seconds: float

    @property
    def gain(self) -> float | None:
        return self.rate / self.own_rate if self.own_rate else None

    @property
    def never_below(self) -> bool:
        return self.own_rate is None or self.rate >= self.own_rate * (1 - 1e-9)


def _groups(plan: PoolPlan) -> str:
    parts = []
    for g in plan.groups:
        names = "+".join(SHORT.get(plan.entries[m].name, plan.entries[m].name) for m in g.models)
        tpus = f"{g.tpus[0]}" if len(g.tpus) == 1 else f"{g.tpus[0]}-{g.tpus[-1]}"
        if g.mode == "own":
            p = plan.plans[g.models[0]]
            detail = f"{p.num_stages}seg x{'+'.join(map(str, p.stage_replicas))}"
        else:
            detail = "co" if g.mode == "cocompiled" else "sep"
        parts.append(f"[{tpus}] {names} {detail}")
    return " | ".join(parts)


def _rate(plan: PoolPlan) -> float:
    return min(x / e.weight for x, e in zip(plan.throughput_ips, plan.entries))


def _sim_off(plan: PoolPlan, spec: EdgeTpuSpec) -> float:
    """The largest |simulated / predicted - 1| over the models, in %, with 5% jitter."""
    run = simulate_pool(plan.models, spec, count=max(2000, 300 * len(plan.models)), jitter=0.05, seed=1)
    return max(abs(m.throughput_ips / x - 1) for m, x in zip(run.models, plan.throughput_ips)) * 100


def _run_pipeline(
    plan: PoolPlan, models: Sequence[TfliteModel], spec: EdgeTpuSpec, spec_name: str
) -> tuple[str, float | None]:
    """Write the pool's files and run ``run_pipeline DIR --backend sim --json --spec spec_name``: (verified per
    model, largest simulated-vs-predicted gap in %)."""
    files, _ = pool_files(plan, models, spec)
    with tempfile.TemporaryDirectory() as tmp:
        write_files(tmp, files)
        cmd = [sys.executable, "-m", "respect_pass.run_pipeline", tmp, "--backend", "sim", "--json", "--spec", spec_name]
        out = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, check=False)
    if out.returncode != 0:
        return f"failed: {(out.stderr.strip().splitlines() or ['?'])[-1]}", None
    doc = json.loads(out.stdout)
    verified = ",".join(str(m.get("verified")).lower() for m in doc["models"])
    off = max(abs(m["throughput_ips"] / m["predicted_throughput_ips"] - 1) for m in doc["models"]) * 100
    return verified, off


def _row(
    names: Sequence[str], weights: Sequence[float], loaded: dict[str, TfliteModel], n: int, spec_name: str, run: bool
) -> PoolRow:
    spec = planning_spec(load_spec(spec_name))
    entries = [PoolEntry(name, loaded[name].graph, w) for name, w in zip(names, weights)]
    t0 = time.perf_counter()
    plan = plan_pool(entries, n, spec)
    seconds = time.perf_counter() - t0
    verified, run_off = _run_pipeline(plan, [loaded[x] for x in names], spec, spec_name) if run else ("", None)
    own = min(x / e.weight for x, e in zip(plan.own.throughput_ips, entries)) if plan.own is not None else None
    return PoolRow(
        models="+".join(SHORT.get(x, x) for x in names),
        weights=",".join(f"{w:g}" for w in weights),
        tpus=n,
        tpus_used=plan.tpus,
        rate=_rate(plan),
        own_rate=own,
        groups=_groups(plan),
        bound=plan.rates.bound,
        sim_off_pct=_sim_off(plan, spec),
        run_verified=verified,
        run_off_pct=run_off,
        seconds=seconds,
    )


def _reference_rows(loaded: dict[str, TfliteModel], spec_name: str) -> list[str]:
    """Coral's two reference pairs on one TPU: the pool's predicted time per alternating pair, co-compiled
    (the plan's choice) and compiled separately, against the measured figures."""
    spec = planning_spec(load_spec(spec_name))
    lines = [
        "| pair | measured separately | measured co-compiled | predicted (pool's choice) | choice | ratio |",
        "|---|---|---|---|---|---|",
    ]
    for pair, (sep, co) in REFERENCE_PAIRS.items():
        entries = [PoolEntry(x, loaded[x].graph) for x in pair]
        plan = plan_pool(entries, 1, spec)
        pair_ms = plan.rates.unit_s * 1e3
        group = plan.groups[0]
        order = "+".join(SHORT[plan.entries[m].name] for m in group.models)
        label = "+".join(SHORT[x] for x in pair)
        lines.append(f"| {label} | {sep} | {co} | {pair_ms:.2f} | {group.mode} {order} | {pair_ms / co:.2f} |")
    return lines


def _markdown(rows: Sequence[PoolRow], reference: Sequence[str], spec_name: str, wall: float, at: str = "") -> str:
    never = sum(r.never_below for r in rows)
    gains = [r.gain for r in rows if r.gain is not None]
    shared = [r for r in rows if "co" in r.groups.split() or "sep" in r.groups.split()]
    paid = [r for r in shared if r.gain is not None and r.gain > 1 + 1e-6]
    sim_ok = sum(r.sim_off_pct <= 5 for r in rows)
    ran = [r for r in rows if r.run_verified]
    run_ok = [r for r in ran if set(r.run_verified.split(",")) == {"true"} and (r.run_off_pct or 0) <= 5]
    fit = json.loads((ROOT / "results" / "cocompile_fit.json").read_text())
    lines = [
        f"# Pool benchmark (`python -m tools.bench_pool`), {time.strftime('%Y-%m-%d')}, commit {at or commit()}",
        "",
        f"Machine: {machine()}; {wall:.0f} s. Every rate is **predicted** by the device model (`{spec_name}` preset;",
        f"co-compilation terms `reload_rate_factor` {fit['reload_rate_factor']}, `t_switch_s` {fit['t_switch_s']},",
        "fitted to Coral's reference pairs by `tools/fit_cocompile.py`), none measured on an Edge TPU.",
        "",
        "- rate: the pool's common rate, the minimum over models of throughput / weight (requests/s);",
        "- own: the best plan with every model on TPUs of its own (every split of N, segments and replicas);",
        "- groups: `[TPUs] models` with `Sseg xR` (own: segments and replicas per segment), `co` (co-compiled, in",
        "  the compile order shown) or `sep` (compiled separately, reloading on every switch);",
        "- sim: the largest gap between a model's simulated throughput (request by request, 5% jitter) and the",
        "  prediction; run: `run_pipeline DIR --backend sim` on the written files (bit-exact per model, gap).",
        "",
        f"- Never below the own-TPUs plan: {never}/{len(rows)} rows.",
        f"- Sharing chosen on {len(shared)} rows; it beats the own-TPUs plan on {len(paid)} of them"
        + (f" (up to {max(r.gain for r in paid if r.gain):.2f}x)" if paid else "")
        + f"; geomean gain over all rows with an own plan {math.exp(sum(map(math.log, gains)) / len(gains)):.3f}x."
        if gains
        else "",
        f"- Simulated within 5% of predicted: {sim_ok}/{len(rows)} rows; run_pipeline bit-exact and within 5%: "
        f"{len(run_ok)}/{len(ran)} rows run.",
        "",
        "## Coral's reference pairs on one TPU (time per alternating pair, ms)",
        "",
        *reference,
        "",
        "Leave-one-out of the co-compilation terms (results/cocompile.md; held out, listed order, measured alone "
        "times; goal within 25%): "
        + "; ".join(
            f"fit on {r['fit_on']}, {r['pair']} {r['mode']}: {r['ratio']:.3f}"
            for r in fit.get("loo", [])
            if r.get("role") == "held-out" and r.get("listed_order")
        ),
        "",
        "## Pools",
        "",
        "| models | weights | N | used | rate /s | own /s | gain | groups | bound | sim off % | run |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        own = f"{r.own_rate:.2f}" if r.own_rate is not None else "-"
        gain = f"{r.gain:.2f}x" if r.gain is not None else "-"
        run = f"{r.run_verified} ({r.run_off_pct:.1f}%)" if r.run_off_pct is not None else (r.run_verified or "")
        lines.append(
            f"| {r.models} | {r.weights} | {r.tpus} | {r.tpus_used} | {r.rate:.2f} | {own} | {gain} | {r.groups} | "
            f"{r.bound} | {r.sim_off_pct:.2f} | {run} |"
        )
    return "\n".join(lines) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tools.bench_pool", description=__doc__.split("\n\n")[0])
    parser.add_argument("--zoo", default=str(ROOT / "zoo"), help="directory of the zoo models (tools.build_zoo)")
    parser.add_argument("--ns", default="2-8", help="TPU counts, e.g. 2-8 or 2,4")
    parser.add_argument("--spec", default="usb", help="device model preset")
    parser.add_argument("--run-every", type=int, default=3, help="run_pipeline on every k-th row (0: none)")
    parser.add_argument("--out", default=str(ROOT / "results"), help="where the .csv and .md go")
    parser.add_argument("--name", default="bench_pool", help="their file stem (default bench_pool)")
    args = parser.parse_args(argv)
    names = sorted({x for combo, _ in COMBOS for x in combo})
    missing = [x for x in names if not (Path(args.zoo) / f"{x}.tflite").is_file()]
    if missing:
        print(
            f"bench_pool: error: missing zoo models {missing}: "
            "python -m tools.build_zoo && python -m tools.build_zoo --google",
            file=sys.stderr,
        )
        return 2
    t0, at = time.perf_counter(), commit()  # the commit as the run starts (it writes into results/)
    loaded = {x: load_model(Path(args.zoo) / f"{x}.tflite") for x in names}
    rows: list[PoolRow] = []
    for combo, weights in COMBOS:
        for n in parse_ks(args.ns):
            run = args.run_every > 0 and len(rows) % args.run_every == 0
            rows.append(_row(combo, weights, loaded, n, args.spec, run))
            r = rows[-1]
            own = f"{r.own_rate:8.2f}" if r.own_rate else "       -"
            print(
                f"{r.models:<16} w={r.weights:<6} N={r.tpus} rate {r.rate:8.2f}/s own {own} {r.groups}  "
                f"sim {r.sim_off_pct:.2f}% {r.run_verified}",
                flush=True,
            )
    reference = _reference_rows(loaded, args.spec)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    with open(out / f"{args.name}.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=[*asdict(rows[0]), "gain"])
        writer.writeheader()
        for r in rows:
            writer.writerow({**asdict(r), "gain": r.gain})
    text = _markdown(rows, reference, args.spec, time.perf_counter() - t0, at)
    (out / f"{args.name}.md").write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
