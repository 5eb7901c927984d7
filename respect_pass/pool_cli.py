"""``respect-pass pool``: several models on one pool of Edge TPUs, a thin layer over :func:`respect_pass.pool.plan_pool`.

    respect-pass pool A.tflite B.tflite ... --tpus N -o DIR [--weights wA,wB | --rates rA,rB] [--spec S]
                      [--scheduler S] [--no-share] [--host-time measured|table] [--fix-batch] [--verify] [--json]
                      [--plot F.png] [-v]

Writes every model's segments and ``<stem>_plan.json`` and ``pool.json`` into DIR, all or nothing
(:func:`respect_pass.pool_doc.pool_files`), and prints what each group of TPUs serves, each model's predicted
rate and latency, what bounds the pool, the comparison with every model on TPUs of its own and the compiler
command lines. Every user error is one line on stderr and exit status 2 (``cli.run_cli``), nothing written.
"""

from __future__ import annotations

import json
import logging
import math
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from hardware import SPEC_METAVAR, EdgeTpuSpec, load_spec
from tflite_io import RespectPassError, stale_segment_files, write_files

from .cli import OneLineParser, add_host_time_argument
from .partition import load_model, planning_spec
from .plot import check_plot_path, figure_png
from .pool import OWN, PoolEntry, PoolPlan, plan_pool
from .pool_doc import pool_files
from .schedulers import SCHEDULERS

if TYPE_CHECKING:
    from matplotlib.figure import Figure

__all__ = ["format_pool", "parse_numbers", "pool_figure", "pool_main"]

log = logging.getLogger(__name__)


def _parser() -> OneLineParser:
    p = OneLineParser(
        prog="respect-pass pool",
        description="Plan several models on one pool of N Edge TPUs: which TPUs serve which model (TPUs of its "
        "own, with segments and replicas, or shared with other models, co-compiled or compiled separately), "
        "to maximise the rate every model gets in proportion to its weight, or to meet given rates with the "
        "fewest TPUs. Writes each model's segments and <stem>_plan.json, and pool.json (run_pipeline DIR runs it).",
    )
    p.add_argument("models", nargs="+", metavar="MODEL.tflite", help="full-integer quantized TFLite models (read only)")
    p.add_argument("--tpus", type=int, required=True, metavar="N", help="Edge TPUs in the pool")
    p.add_argument("-o", "--out_dir", required=True, metavar="DIR", help="output directory (created if missing)")
    share = p.add_mutually_exclusive_group()
    share.add_argument(
        "--weights",
        metavar="W1,W2,...",
        help="one positive number per model: requests arrive in these proportions (default: all 1)",
    )
    share.add_argument(
        "--rates",
        metavar="R1,R2,...",
        help="requests per second each model needs: the plan uses the fewest TPUs that meet them all",
    )
    p.add_argument("--spec", default="usb", metavar=SPEC_METAVAR, help="Edge TPU cost-model constants (default: usb)")
    p.add_argument(
        "--scheduler",
        default="respect",
        choices=sorted(set(SCHEDULERS) - {"given"}),
        help="scheduling algorithm of each model's own TPUs (default: respect)",
    )
    p.add_argument("--no-share", action="store_true", help="every model on TPUs of its own (no TPU serves two models)")
    add_host_time_argument(p)
    p.add_argument("--fix-batch", action="store_true", help="set a dynamic batch dimension to 1 in the segments")
    p.add_argument("--verify", action="store_true", help="first require every model's segments to chain bit-exact in LiteRT")
    p.add_argument("--json", action="store_true", help="print the pool.json document instead of a table")
    p.add_argument("--plot", metavar="FILE.png", help="also draw which TPU serves what (predicted)")
    p.add_argument("-v", "--verbose", action="store_true", help="log progress to stderr")
    return p


def parse_numbers(text: str, flag: str, count: int) -> tuple[float, ...]:
    """``"1,2.5"`` -> ``(1.0, 2.5)``: exactly ``count`` positive finite numbers, or a RespectPassError naming ``flag``."""
    parts = [s.strip() for s in text.split(",")]
    values = []
    for s in parts:
        try:
            v = float(s)
        except ValueError:
            v = math.nan
        if not (math.isfinite(v) and v > 0):
            raise RespectPassError(f"{flag}: {s!r} is not a positive number")
        values.append(v)
    if len(values) != count:
        raise RespectPassError(f"{flag} gives {len(values)} number(s) for {count} model(s): give one per model")
    return tuple(values)


def _check_paths(paths: Sequence[str]) -> None:
    """Refuse a model given twice (the same file, by resolved path) or two models whose outputs would clash."""
    seen: dict[Path, str] = {}
    stems: dict[str, str] = {}
    for given in paths:
        resolved = Path(given).resolve()
        if resolved in seen:
            raise RespectPassError(f"{given}: the same model is given twice (as {seen[resolved]} too)")
        seen[resolved] = given
        stem = Path(given).stem
        if stem in stems:
            raise RespectPassError(
                f"{stems[stem]} and {given} have the same name '{stem}': their output files would clash "
                "(copy one under another name)"
            )
        stems[stem] = given


def _ranges(values: Sequence[int]) -> str:
    """``(0, 1, 2)`` -> ``'0-2'``; ``(3,)`` -> ``'3'`` (a group's TPUs are consecutive)."""
    return f"{values[0]}-{values[-1]}" if len(values) > 1 else str(values[0])


def _layout(plan: PoolPlan, m: int) -> str:
    """A model's segments x the replicas of each: ``1 x 2``, ``2 x 1+3``."""
    p = plan.plans[m]
    return f"{p.num_stages} x {'+'.join(map(str, p.stage_replicas))}"


def format_pool(plan: PoolPlan, doc: dict[str, Any], out_dir: str | Path, spec: EdgeTpuSpec, share: bool = True) -> str:
    """The human-readable summary of a pool: groups, models, bound, the own-TPUs comparison, compile lines
    (``doc``: its pool.json document; ``share``: whether groups could share TPUs)."""
    pred = f"predicted, {spec.name} spec"
    rows = [
        f"pool of {plan.available} Edge TPUs, {len(plan.entries)} model(s), {plan.tpus} TPU(s) used "
        f"({pred}; {plan.objective})",
        f"{'group':>5}  {'TPUs':>6}  {'mode':<10}  {'segments x replicas':<26}  models (co-compile order)",
    ]
    for g, group in enumerate(plan.groups):
        layout = ", ".join(_layout(plan, m) for m in group.models)
        if group.mode != OWN:
            layout = f"1 x {len(group.tpus)} each (round robin)"
        names = ", ".join(plan.entries[m].name for m in group.models)
        rows.append(f"{g:>5}  {_ranges(group.tpus):>6}  {group.mode:<10}  {layout:<26}  {names}")
    width = max(len("model"), *(len(e.name) for e in plan.entries))
    head = "rate /s" if plan.objective == "rates" else "weight"
    rows.append(f"{'model':<{width}}  {head:>9}  {'pred /s':>10}  {'pred latency ms':>15}  plan")
    for row in doc["models"]:
        rows.append(
            f"{row['name']:<{width}}  {row['rate'] if row['rate'] is not None else row['weight']:>9.6g}  "
            f"{row['throughput_ips']:>10.1f}  "
            f"{row['latency_ms']:>15.3f}  {Path(out_dir) / row['plan']}"
        )
    rows.append(f"bound ({pred}): {plan.rates.bound}")
    rows.append(_own_line(plan, pred, share))
    rows.append(f"compile (run in {out_dir}):")
    rows.extend(f"  {c}" for group in doc["tpu_groups"] for c in group["compile_commands"])
    rows.append(spec.error_line())
    if plan.objective == "rates" and not plan.unmet:
        rows.append(f"all rates met with {plan.tpus} of {plan.available} TPUs ({pred})")
    return "\n".join(rows)


def _own_line(plan: PoolPlan, pred: str, share: bool) -> str:
    """Every model on TPUs of its own: its best rates, and this plan's gain over it (or why not possible)."""
    if plan.own is None:
        return "every model on TPUs of its own: not possible: fewer TPUs than models"
    if plan.objective == "weights" and all(g.mode == OWN for g in plan.groups):
        why = "" if len(plan.entries) < 2 else " (sharing a TPU does not pay)" if share else " (--no-share)"
        return f"every model on TPUs of its own: this plan{why}"
    rates = ", ".join(f"{e.name} {x:.1f}/s" for e, x in zip(plan.entries, plan.own.throughput_ips))
    head = f"every model on TPUs of its own ({len(plan.own.tpu_busy_s)} TPUs; {pred}): {rates}"
    if plan.objective == "rates":
        missed = [e.name for e, x in zip(plan.entries, plan.own.throughput_ips) if x < e.weight * (1 - 1e-6)]
        return f"{head}; " + (f"misses the rate of {', '.join(missed)}" if missed else "meets every rate")
    return f"{head}; this plan gives each model x{plan.own.unit_s / plan.rates.unit_s:.3f} that rate"


def pool_figure(plan: PoolPlan, spec: EdgeTpuSpec) -> Figure:
    """One horizontal bar per TPU of the pool: the share of its time each model's segment takes at the
    predicted rate (segments colored by model and labelled); nothing is rendered."""
    from matplotlib.figure import Figure
    from matplotlib.patches import Patch

    colors = [f"C{i % 10}" for i in range(len(plan.entries))]
    fig = Figure(figsize=(9, 1.5 + 0.5 * plan.available), layout="constrained")
    ax = fig.subplots()
    left = [0.0] * plan.available
    for m, (entry, pm) in enumerate(zip(plan.entries, plan.models)):
        rate = plan.throughput_ips[m]
        switch = plan.rates.switches[m] * pm.switch_s
        for k, stage in enumerate(pm.stages):
            share = rate * (stage.seconds + switch) / len(stage.devices)
            label = entry.name if len(pm.stages) == 1 else f"{entry.name} s{k}"
            for d in stage.devices:
                ax.barh(d, share, left=left[d], color=colors[m], edgecolor="white")
                if share >= 0.008 * len(label):  # a label that fits its bar (7 pt); the legend names the rest
                    ax.text(left[d] + share / 2, d, label, ha="center", va="center", fontsize=7, clip_on=True)
                left[d] += share
    for d in range(plan.available):
        if left[d] == 0:
            ax.text(0.01, d, "idle", va="center", fontsize=7, color="gray")
    handles = [
        Patch(color=colors[m], label=f"{entry.name}: {plan.throughput_ips[m]:.1f}/s") for m, entry in enumerate(plan.entries)
    ]
    ax.set(
        xlabel="share of the TPU's time at the pool's rate",
        ylabel="Edge TPU",
        yticks=range(plan.available),
        xlim=(0, max(1.05, *left)),
        ylim=(plan.available - 0.5, -0.5),
    )
    ax.legend(
        handles=handles, title="predicted rate", fontsize=7, title_fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0)
    )
    fig.suptitle(f"what each Edge TPU serves: {spec.name} spec (predicted; bound: {plan.rates.bound})", fontsize=10)
    return fig


def pool_main(argv: Sequence[str]) -> int:
    """Body of ``respect-pass pool`` (errors are RespectPassError lines, see ``cli.run_cli``)."""
    args = _parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(levelname)s: %(message)s")
    _check_paths(args.models)
    given = args.rates if args.rates is not None else args.weights
    flag = "--rates" if args.rates is not None else "--weights"
    weights = parse_numbers(given, flag, len(args.models)) if given is not None else (1.0,) * len(args.models)
    plot = check_plot_path(args.plot, args.out_dir) if args.plot is not None else None
    spec = planning_spec(load_spec(args.spec))
    models = [load_model(path, args.fix_batch, args.host_time) for path in args.models]
    entries = [PoolEntry(Path(path).stem, m.graph, w) for path, m, w in zip(args.models, models, weights)]
    plan = plan_pool(entries, args.tpus, spec, args.scheduler, rates=args.rates is not None, share=not args.no_share)
    log.info("pool planned in %.3f s: %d group(s) on %d TPU(s)", plan.solve_seconds, len(plan.groups), plan.tpus)
    files, doc = pool_files(plan, models, spec, verify=args.verify)
    png = figure_png(pool_figure(plan, spec)) if plot is not None else None
    stale = [n for e, p in zip(plan.entries, plan.plans) for n in stale_segment_files(args.out_dir, e.name, p.num_stages)]
    write_files(args.out_dir, files, remove=stale)
    log.info("wrote %d files to %s (removed %d of plans with other segment counts)", len(files), args.out_dir, len(stale))
    if plot is not None and png is not None:
        write_files(plot.parent, {plot.name: png})
    print(json.dumps(doc, indent=2) if args.json else format_pool(plan, doc, args.out_dir, spec, not args.no_share))
    if args.verify and not args.json:
        print("verified: every model's segments chain bit-exact with the model (LiteRT, random inputs)")
    if plot is not None and not args.json:
        print(f"plot: {plot}")
    for line in plan.unmet:
        print(f"respect-pass pool: warning: {line}", file=sys.stderr)
    return 0
