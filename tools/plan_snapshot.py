"""Plan snapshot: every deterministic scheduler's plan on a fixed check set, to compare two commits bit for bit.

A refactor of the device model or of a scheduler must leave every plan as it was. This script writes, for
each (case, K, spec, scheduler), the stage map, the scheduler's own bottleneck and latency and the
reference device model's (``float.hex``, so a one-ulp change shows), and, with ``--compare OLD.json``,
lists every difference against an earlier snapshot.

    python -m tools.plan_snapshot --out /tmp/new.json                   # zoo (if built), evidence, generated
    python -m tools.plan_snapshot --out /tmp/new.json --compare /tmp/old.json
    PYTHONPATH=/path/to/old/checkout python -m tools.plan_snapshot --out /tmp/old.json   # the other side

Check set: the zoo models found in ``zoo/`` (``make zoo``), the embedded and test models, the evidence
models with CPU ops, and generated graphs (every family, 30-700 ops), at K = 2, 3, 4, 6, 8 under the
``usb`` and ``usb-separate`` presets (the first with the shared link). ``exact`` is left out: under a time
limit CP-SAT is not deterministic; its model's coefficients are compared by its own tests.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from hardware import PRESETS, latency_ms, pipeline_period_ms, stage_costs
from hardware.placement import placed
from respect_pass.generator import FAMILIES, generate
from respect_pass.schedulers import SCHEDULERS
from tflite_io import OpGraph, RespectPassError, read_model

from .common import ROOT

__all__ = ["check_set", "snapshot", "compare", "main"]

SCHEDULERS_CHECKED = ("compiler", "profiling", "dp", "multiorder", "respect")
KS = (2, 3, 4, 6, 8)
SPECS = ("usb", "usb-separate")
_SIZES = (30, 80, 200, 450, 700)


def check_set(quick: bool = False) -> list[tuple[str, OpGraph]]:
    """(name, placed graph) of every case: zoo models present on disk, shipped models, generated graphs."""
    paths = [ROOT / "respect_pass/data/mobilenet_v2_0.35_96_int8.tflite", ROOT / "tests/data/tiny_inception_int8.tflite"]
    evidence = ROOT / "tests/data/evidence"
    paths += [p for p in sorted(evidence.glob("*.tflite")) if "edgetpu" not in p.name and "dynamic" not in p.name]
    if not quick:
        paths += sorted((ROOT / "zoo").glob("*.tflite"))
    cases = []
    for path in paths:
        try:
            cases.append((path.stem, placed(read_model(path).graph)))
        except RespectPassError as exc:
            print(f"skipped {path.name}: {exc}", file=sys.stderr)
    sizes = _SIZES[:2] if quick else _SIZES
    for i, family in enumerate(FAMILIES):
        for size in sizes:
            cases.append((f"{family}_{size}", generate(family, size, seed=i)))
    return cases


def snapshot(cases: list[tuple[str, OpGraph]], ks: tuple[int, ...] = KS) -> dict[str, dict[str, object]]:
    """Key ``case|K|spec|scheduler`` -> {stages, bottleneck, latency} (hex floats) or {error}."""
    out: dict[str, dict[str, object]] = {}
    for name, graph in cases:
        for k in ks:
            for spec_name in SPECS:
                for sched in SCHEDULERS_CHECKED:
                    key = f"{name}|{k}|{spec_name}|{sched}"
                    spec = PRESETS[spec_name]
                    try:
                        plan = SCHEDULERS[sched](graph, k, spec)
                    except RespectPassError as exc:
                        out[key] = {"error": type(exc).__name__}
                        continue
                    costs = stage_costs(graph, plan.stages, plan.num_stages, spec)
                    out[key] = {
                        "stages": list(plan.stages),
                        "bottleneck": float(plan.stats.get("bottleneck_ms", 0.0)).hex(),
                        "latency": float(plan.stats.get("latency_ms", 0.0)).hex(),
                        "reference": [pipeline_period_ms(costs, spec).hex(), latency_ms(costs).hex()],
                    }
    return out


def compare(old: dict[str, dict[str, object]], new: dict[str, dict[str, object]]) -> list[str]:
    """One line per key whose plan or figures differ (or that only one side has)."""
    lines = []
    for key in sorted(set(old) | set(new)):
        a, b = old.get(key), new.get(key)
        if a == b:
            continue
        if a is None or b is None:
            lines.append(f"{key}: only in {'new' if a is None else 'old'}")
            continue
        what = [f for f in ("stages", "bottleneck", "latency", "reference", "error") if a.get(f) != b.get(f)]
        detail = ""
        if "bottleneck" in what and "error" not in what:
            fa, fb = float.fromhex(str(a["bottleneck"])), float.fromhex(str(b["bottleneck"]))
            detail = f" bottleneck {fa:.9g} -> {fb:.9g} ms ({(fb / fa - 1) * 100 if fa else 0:+.3g}%)"
        lines.append(f"{key}: {', '.join(what)} differ{detail}")
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tools.plan_snapshot", description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, required=True, help="snapshot JSON to write")
    parser.add_argument("--compare", type=Path, help="an earlier snapshot: print every difference, exit 1 if any")
    parser.add_argument("--quick", action="store_true", help="no zoo, small generated graphs only")
    args = parser.parse_args(argv)
    t0 = time.perf_counter()
    cases = check_set(args.quick)
    snap = snapshot(cases)
    args.out.write_text(json.dumps(snap, indent=0, sort_keys=True))
    print(f"{len(snap)} plans on {len(cases)} cases in {time.perf_counter() - t0:.0f} s -> {args.out}")
    if args.compare is None:
        return 0
    diffs = compare(json.loads(args.compare.read_text()), snap)
    for line in diffs:
        print(line)
    print(f"{len(diffs)} of {len(snap)} plans differ from {args.compare}")
    return 1 if diffs else 0


if __name__ == "__main__":
    sys.exit(main())
