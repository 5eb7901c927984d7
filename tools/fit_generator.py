"""Fit the synthetic graph generator's constants to the model zoo and compare zoo vs generated graphs.

Reads every zoo/*.tflite (built by tools/build_zoo.py), measures per-model
statistics (op-type mix, parameter bytes and MACs per op, activation bytes per
edge, fan-in, share of ops per resolution level, block widths, total
parameters vs op count) and derives the constants of
``respect_pass/generator/fitted.py``:

- RESOLUTIONS: input sizes per architecture group;
- PARAMS_LOG_*: log(total parameter MiB) = intercept[group] + slope * log(ops),
  one shared slope fitted within groups (fixed effects; VGG left out, no family
  is FC-dominated), sigma = the residual spread; PARAMS_MIB_RANGE is a design
  choice (the regime where pipelining over the ~7 MiB cache matters);
- LEVEL_FRACTIONS: share of ops at output resolution R / 2**level, per group;
- BLOCK_WIDTHS: median channels of ADD / CONCATENATION outputs per level;
  CONV_WIDTHS: median CONV_2D output channels per level (all models);
- DENSE_GROWTH / DENSE_LAYERS_PER_BLOCK: DenseNet growth rate (3x3 conv width)
  and (smallest, median) layers per dense block: the generator's layers read
  the concatenation of all earlier outputs, so fan-in grows with block length
  and the longest blocks are left out to keep the mean fan-in near DenseNet's;
- RESIDUAL_VARIANTS: ResNet v1 / ResNet v2 / MobileNetV2 architectures in the zoo;
- LAYERED_*: op-type mix of single-input and two-input ops, and the fan-in
  histogram mixed half and half with uniform 1..6 (RESPECT's random DAGs draw
  1-6 predecessors); NUM_CLASSES and HEAD_STYLES from the zoo's classifier heads.

    python -m tools.fit_generator --write   # fit, rewrite fitted.py, then compare
    python -m tools.fit_generator           # compare with the constants already in fitted.py

Writes results/generator_fit.csv (one row per zoo model and per generated
graph) and results/generator_stats.md (the comparison tables), and prints the tables.
"""

from __future__ import annotations

import argparse
import csv
import datetime
import importlib
import logging
import math
import pprint
import sys
from collections import Counter, defaultdict
from pathlib import Path

import numpy as np

from tflite_io import OpGraph, read

ROOT = Path(__file__).resolve().parent.parent

FITTED = ROOT / "respect_pass" / "generator" / "fitted.py"
GROUPS = {"resnet": "resnet", "densenet": "dense", "inception": "inception", "mobilenet": "mobile", "vgg": "vgg"}
#: zoo models each family is compared with (matching op count); other families are compared with all models
MATCH = {"resnet": "residual", "mobilenetv2": "residual", "inception": "inception", "densenet": "dense"}
CACHE_MIB = 7.0
STATS = [
    "params_mib",
    "gmacs",
    "med_param_b",
    "p90_param_b",
    "med_macs",
    "p90_macs",
    "med_edge_b",
    "p90_edge_b",
    "mean_fanin",
    "max_fanin",
    "frac_params",
    "frac_conv",
    "frac_dw",
    "frac_eltwise",
    "frac_concat",
]
RATIO_STATS = [
    "params_mib",
    "gmacs",
    "med_param_b",
    "p90_param_b",
    "med_macs",
    "p90_macs",
    "med_edge_b",
    "p90_edge_b",
    "mean_fanin",
    "frac_params",
]


def group_of(name: str) -> str:
    return next(g for prefix, g in GROUPS.items() if name.startswith(prefix))


def arch_of(name: str) -> str:
    return name.split("_")[0]


def graph_stats(g: OpGraph) -> dict[str, float]:
    """Statistics compared between zoo and generated graphs (same definitions for both)."""
    pb = np.array([op.param_bytes for op in g.ops], dtype=float)
    macs = np.array([op.macs for op in g.ops], dtype=float)
    edges = np.array([e.nbytes for e in g.edges], dtype=float)
    fanin = np.array([len(p) for p in g.preds], dtype=float)
    types = Counter(op.op_type for op in g.ops)
    n = g.num_ops
    return {
        "ops": n,
        "params_mib": g.total_param_bytes / 2**20,
        "gmacs": g.total_macs / 1e9,
        "med_param_b": float(np.median(pb)),
        "p90_param_b": float(np.quantile(pb, 0.9)),
        "med_macs": float(np.median(macs)),
        "p90_macs": float(np.quantile(macs, 0.9)),
        "med_edge_b": float(np.median(edges)),
        "p90_edge_b": float(np.quantile(edges, 0.9)),
        "mean_fanin": float(fanin.mean()),
        "max_fanin": float(fanin.max()),
        "frac_params": float((pb > 0).mean()),
        "frac_conv": (types["CONV_2D"] + types["FULLY_CONNECTED"]) / n,
        "frac_dw": types["DEPTHWISE_CONV_2D"] / n,
        "frac_eltwise": (types["ADD"] + types["MUL"]) / n,
        "frac_concat": types["CONCATENATION"] / n,
    }


def kind_of(g: OpGraph) -> tuple[str, int]:
    """Architecture variant and input resolution: MobileNetV2-like (depthwise), pre-activation (MUL), or plain."""
    types = {op.op_type for op in g.ops}
    variant = "depthwise" if "DEPTHWISE_CONV_2D" in types else "preact" if "MUL" in types else "plain"
    return variant, g.tensors[g.inputs[0]].shape[1]


def levels(g: OpGraph) -> list[int | None]:
    """Resolution level of each op's output (R / 2**level; None for non-4D or 1x1 head outputs)."""
    r = g.tensors[g.inputs[0]].shape[1]
    out = []
    for op in g.ops:
        s = g.tensors[op.outputs[0]].shape
        lv = max(1, round(math.log2(r / s[1]))) if len(s) == 4 and s[1] > 1 else None
        out.append(lv if lv is None or lv <= 5 else None)
    return out


def fit(models: dict[str, OpGraph]) -> dict[str, object]:
    """The generator constants, from the zoo models (name -> graph)."""
    by_group: dict[str, list[str]] = defaultdict(list)
    for name in models:
        by_group[group_of(name)].append(name)
    groups = {g: names for g, names in by_group.items() if g != "vgg"} | {"all": list(models)}
    res = {}
    for g, names in groups.items():
        c = Counter(models[m].tensors[models[m].inputs[0]].shape[1] for m in names)
        res[g] = tuple((r, round(k / len(names), 3)) for r, k in sorted(c.items()))
    # parameters vs ops: one model per architecture (the first, i.e. 224 where it exists), no VGG
    archs: dict[str, str] = {}
    for name in sorted(models):
        if group_of(name) != "vgg":
            archs.setdefault(arch_of(name), name)
    pts = defaultdict(list)
    for name in archs.values():
        gm = models[name]
        pts[group_of(name)].append((math.log(gm.num_ops), math.log(gm.total_param_bytes / 2**20)))
    sxy = sxx = 0.0
    for p in pts.values():
        x, y = np.array(p).T
        sxy += float(((x - x.mean()) * (y - y.mean())).sum())
        sxx += float(((x - x.mean()) ** 2).sum())
    slope = sxy / sxx
    intercept = {g: float(np.mean([y - slope * x for x, y in p])) for g, p in pts.items()}
    allp = [q for p in pts.values() for q in p]
    intercept["all"] = float(np.mean([y - slope * x for x, y in allp]))
    resid = [y - slope * x - intercept[g] for g, p in pts.items() for x, y in p]
    sigma = math.sqrt(sum(r * r for r in resid) / max(1, len(resid) - len(pts) - 1))
    # levels and widths
    level_fr, block_w = {}, {}
    conv_w: dict[int, list[float]] = defaultdict(list)
    for g, names in groups.items():
        fr: dict[int, list[float]] = defaultdict(list)
        widths: dict[int, list[float]] = defaultdict(list)
        for m in names:
            gr, lv = models[m], levels(models[m])
            known = [v for v in lv if v is not None]
            for v in range(1, 6):
                fr[v].append(known.count(v) / len(known))
            per: dict[int, list[int]] = defaultdict(list)
            convs: dict[int, list[int]] = defaultdict(list)
            for op, lvl in zip(gr.ops, lv):
                ch = gr.tensors[op.outputs[0]].shape[-1]
                readers = gr.succs[op.index]
                if (
                    lvl is not None
                    and op.op_type in ("ADD", "CONCATENATION")
                    and sum(1 for t in op.inputs if t in gr.producer) >= 2
                    and not all(gr.ops[r].op_type == "CONCATENATION" for r in readers)
                ):
                    per[lvl].append(ch)  # block outputs (not Inception's inner concatenations)
                if lvl is not None and op.op_type == "CONV_2D":
                    convs[lvl].append(ch)
            for v, cs in per.items():
                widths[v].append(float(np.median(cs)))
            if g == "all":
                for v, cs in convs.items():
                    conv_w[v].append(float(np.median(cs)))
        level_fr[g] = {v: round(float(np.mean(f)), 3) for v, f in sorted(fr.items())}
        block_w[g] = {v: int(round(np.median(w) / 8) * 8) for v, w in sorted(widths.items())}
    # DenseNet: growth rate and layers per block (3x3 convolutions per resolution level)
    dn = groups.get("dense", [])
    growth = [
        models[m].tensors[op.outputs[0]].shape[-1]
        for m in dn
        for op in models[m].ops
        if op.op_type == "CONV_2D" and models[m].tensors[op.inputs[1]].shape[1] == 3
    ]
    blocks: list[int] = []
    for m in dn:
        lv = levels(models[m])
        per_level = Counter(
            v
            for op, v in zip(models[m].ops, lv)
            if op.op_type == "CONV_2D" and models[m].tensors[op.inputs[1]].shape[1] == 3
        )
        blocks += list(per_level.values())
    # residual variants: distinct architectures
    variants: Counter[str] = Counter()
    for name in archs.values():
        if group_of(name) == "resnet":
            variants["v2" if any(op.op_type == "MUL" for op in models[name].ops) else "v1"] += 1
        elif arch_of(name) == "mobilenetv2":
            variants["mbv2"] += 1
    # layered: op mix by fan-in and fan-in histogram (model-averaged)
    single, multi, fanin = defaultdict(list), defaultdict(list), defaultdict(list)
    body1 = ("CONV_2D", "DEPTHWISE_CONV_2D", "MUL", "ADD", "AVERAGE_POOL_2D", "MAX_POOL_2D")
    for gm in models.values():
        f = [len(p) for p in gm.preds]
        c1 = Counter(op.op_type for op, k in zip(gm.ops, f) if k == 1 and op.op_type in body1)
        c2 = Counter(op.op_type for op, k in zip(gm.ops, f) if k == 2)
        for t in body1:
            single[t].append(c1[t] / sum(c1.values()))
        for t in ("ADD", "MUL", "CONCATENATION"):
            if c2:  # only models that have two-input ops
                multi[t].append(c2[t] / sum(c2.values()))
        hist = Counter(min(k, 6) for k in f if k >= 1)
        for k in range(1, 7):
            fanin[k].append(hist[k] / sum(hist.values()))
    extra = {"LOGISTIC": 0.02, "RELU6": 0.02, "RELU": 0.02}  # not in the zoo (fused there); a small share
    s_mix = {t: float(np.mean(v)) for t, v in single.items()}
    s_tot = sum(s_mix.values()) / (1 - sum(extra.values()))
    heads = Counter("conv" if g.ops[g.num_ops - 1].op_type == "RESHAPE" else "fc" for g in models.values())
    classes = Counter(g.tensors[g.outputs[0]].shape[-1] for g in models.values())
    return {
        "RESOLUTIONS": res,
        "NUM_CLASSES": tuple((c, round(k / len(models), 3)) for c, k in sorted(classes.items())),
        "PARAMS_LOG_SLOPE": round(slope, 4),
        "PARAMS_LOG_SIGMA": round(sigma, 4),
        "PARAMS_LOG_INTERCEPT": {g: round(v, 4) for g, v in sorted(intercept.items())},
        "PARAMS_MIB_RANGE": (0.5, 64.0),  # design: the fitted mean is clipped to it widened by one sigma
        "LEVEL_FRACTIONS": level_fr,
        "BLOCK_WIDTHS": {g: w for g, w in block_w.items() if w},
        "CONV_WIDTHS": {"all": {v: int(round(np.median(c) / 8) * 8) for v, c in sorted(conv_w.items())}},
        "DENSE_GROWTH": int(np.median(growth)) if growth else 32,
        "DENSE_LAYERS_PER_BLOCK": (int(min(blocks)), int(np.median(blocks))) if blocks else (6, 14),
        "RESIDUAL_VARIANTS": tuple((v, round(k / sum(variants.values()), 3)) for v, k in sorted(variants.items())),
        "LAYERED_FANIN": tuple(round(0.5 * float(np.mean(fanin[k])) + 0.5 / 6, 4) for k in range(1, 7)),
        "LAYERED_SINGLE_MIX": tuple((t, round(v / s_tot, 4)) for t, v in s_mix.items()) + tuple(extra.items()),
        "LAYERED_MULTI_MIX": tuple((t, round(float(np.mean(v)), 4)) for t, v in multi.items()),
        "HEAD_STYLES": tuple((s, round(k / len(models), 3)) for s, k in sorted(heads.items())),
    }


# Written after the fitted constants as is (the backslash-newline below joins two source lines into one).
_DESIGN = """
# Design choices, not fitted (the zoo has no counterpart): activation of squeeze-excite blocks
# (EfficientNet swish = LOGISTIC + MUL, MobileNetV3 hard-swish, written RELU6 because HARD_SWISH does not map \
to the Edge TPU, MnasNet ReLU fused into the conv),
# second model output (none / a second classifier on the same features / an auxiliary head on a
# mid-network block, placed last in the execution order) and a leading QUANTIZE (requantised input).
SE_ACTIVATIONS = (("swish", 0.5), ("hswish", 0.3), ("relu", 0.2))
TWO_OUTPUTS = (("", 0.8), ("shared", 0.1), ("aux", 0.1))
QUANTIZE_INPUT = 0.1
"""


def render(constants: dict[str, object], zoo: list[str]) -> str:
    lines = [
        '"""Constants of the synthetic graph generator, fitted to the model zoo.',
        "",
        f"Written by tools/fit_generator.py on {datetime.date.today().isoformat()} from {len(zoo)} zoo models:",
        *[f"    {n}" for n in zoo],
        "Do not edit by hand: rerun ``python -m tools.fit_generator --write`` (see its docstring for each constant).",
        '"""',
        f'FIT_DATE = "{datetime.date.today().isoformat()}"',
    ]
    lines += [f"{k} = {pprint.pformat(v, width=110, sort_dicts=False)}" for k, v in constants.items()]
    return "\n".join(lines) + "\n" + _DESIGN


def fmt(v: float) -> str:
    if isinstance(v, str):
        return v
    if v == 0:
        return "0"
    if abs(v) >= 1e5:
        return f"{v:.2e}"
    return f"{v:.3g}" if abs(v) < 100 else f"{v:.0f}"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--zoo", type=Path, default=ROOT / "zoo")
    ap.add_argument("--write", action="store_true", help="rewrite respect_pass/generator/fitted.py first")
    ap.add_argument("--seeds", type=int, default=5, help="generated graphs per comparison row (stats: median)")
    ap.add_argument("--csv", type=Path, default=ROOT / "results" / "generator_fit.csv")
    ap.add_argument("--md", type=Path, default=ROOT / "results" / "generator_stats.md")
    args = ap.parse_args(argv)
    logging.disable(logging.WARNING)  # the reader warns about ops the Edge TPU lacks; irrelevant here
    paths = sorted(args.zoo.glob("*.tflite"))
    if not paths:
        print(f"fit_generator: no .tflite models in {args.zoo} (run tools/build_zoo.py)", file=sys.stderr)
        return 2
    models = {p.stem: read(p) for p in paths}
    models = {k: getattr(v, "graph", v) for k, v in models.items()}
    if args.write:
        constants = fit(models)
        FITTED.write_text(render(constants, list(models)))
        print(f"wrote {FITTED.relative_to(ROOT)}")
    import respect_pass.generator as gen

    importlib.reload(gen.fitted)

    rows, table = [], []
    zoo_stats = {name: graph_stats(g) for name, g in models.items()}
    for name, st in zoo_stats.items():
        rows.append({"source": "zoo", "name": name, "family": group_of(name), "seed": "", **st})

    def gen_rows(family: str, n: int, like: OpGraph | None = None) -> dict[str, float]:
        """Median stats over the first ``--seeds`` seeds (whose graphs have the variant and resolution of ``like``)."""
        per = []
        for seed in range(50 * args.seeds):
            g = gen.generate(family, n, seed)
            if like is not None and kind_of(g) != kind_of(like):
                continue
            st = graph_stats(g)
            rows.append({"source": "generated", "name": g.name, "family": family, "seed": seed, **st})
            per.append(st)
            if len(per) == args.seeds:
                break
        return {k: float(np.median([p[k] for p in per])) for k in per[0]}

    for name, st in zoo_stats.items():
        family = next((f for prefix, f in MATCH.items() if name.startswith(prefix)), None)
        if family is None or not 20 <= st["ops"] <= 800:
            continue
        g = gen_rows(family, int(st["ops"]), models[name])
        worst = max(max(g[k] / st[k], st[k] / g[k]) for k in RATIO_STATS if st[k] > 0 and g[k] > 0)
        table.append({"model": name, "source": "zoo", **st, "worst_ratio": ""})
        table.append({"model": f"{family} x{args.seeds}", "source": "generated", **g, "worst_ratio": round(worst, 2)})
    zoo_med = {k: float(np.median([s[k] for s in zoo_stats.values()])) for k in STATS + ["ops"]}
    fam_table = [{"model": "zoo median (all models)", "source": "zoo", **zoo_med}]
    for family in gen.FAMILIES:
        for n in (50, 200, 800):
            fam_table.append({"model": f"{family} @{n} x{args.seeds}", "source": "generated", **gen_rows(family, n)})
    suite = gen.generate_suite(60, 0)
    mib = np.array([g.total_param_bytes / 2**20 for g in suite])

    args.csv.parent.mkdir(parents=True, exist_ok=True)
    with args.csv.open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=["source", "name", "family", "seed", "ops", *STATS])
        w.writeheader()
        for r in rows:
            w.writerow({k: (round(v, 4) if isinstance(v, float) else v) for k, v in r.items()})
    cols = ["model", "source", "ops", *RATIO_STATS, "max_fanin", "frac_concat"]
    md = [
        f"# Synthetic graph generator vs model zoo ({datetime.date.today().isoformat()})",
        "",
        "Produced by `python -m tools.fit_generator` (constants in `respect_pass/generator/fitted.py`, "
        f"fitted on {datetime.date.today().isoformat()}). Generated rows: median over seeds 0..{args.seeds - 1} "
        "of the family at the zoo model's op count. Per-op statistics over all ops (param bytes and MACs as the "
        "reader computes them), edge bytes over activation edges. `worst_ratio`: the largest zoo/generated "
        "factor among the statistics from params_mib to frac_params.",
        "",
    ]

    def md_table(recs: list[dict], columns: list[str]) -> list[str]:
        out = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
        out += ["| " + " | ".join(fmt(r.get(c, "")) for c in columns) + " |" for r in recs]
        return out

    md += ["## Matched families", ""] + md_table(table, cols + ["worst_ratio"])
    md += ["", "## Every family at 50, 200 and 800 ops", ""] + md_table(fam_table, cols)
    md += [
        "",
        "## Suite: generate_suite(60, seed=0)",
        "",
        f"Total parameters: min {mib.min():.2f} MiB, median {np.median(mib):.2f} MiB, max {mib.max():.2f} MiB; "
        f"{int((mib < CACHE_MIB).sum())} graphs below and {int((mib > CACHE_MIB).sum())} above the "
        f"{CACHE_MIB} MiB Edge TPU parameter cache; {int(((mib >= 2) & (mib <= 60)).sum())} in 2-60 MiB.",
        "",
    ]
    args.md.write_text("\n".join(md) + "\n")
    print("\n".join(md))
    print(f"\nwrote {args.csv.relative_to(ROOT)} and {args.md.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
