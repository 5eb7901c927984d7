"""Fit the pool's co-compilation terms to Coral's two-models-on-one-TPU figures, leave-one-out.

Fits the two constants of :mod:`hardware.pool` that only several models on one TPU exercise,
``EdgeTpuSpec.t_switch_s`` (the fixed cost of any switch between models) and
``EdgeTpuSpec.reload_rate_factor`` (a separately compiled model's cached parameters reload at that times the
streaming bandwidth, :func:`hardware.terms.reload_seconds`), to pycoral's ``cocompilation_reference`` figures
(x86 Xeon + USB 3, ms per alternating pair A, B, A, B, ...; /work/shared/reference/public_measurements/README.md
section 2): MobileNet v1 + v2 and Inception v1 + v4, each compiled separately and co-compiled.

The model of one alternating pair on one TPU, every term from ``hardware`` (:func:`separate_pair_seconds`,
:func:`cocompiled_pair_seconds`):

* separately compiled: ``alone_A + alone_B + switch(on_chip_A) + switch(on_chip_B)``
  (:func:`hardware.terms.switch_seconds`; each model gets the whole cache, a switch reloads the incoming
  model's cached bytes, ``hardware.pool.whole_model_cost(X).on_chip_bytes``);
* co-compiled, A first in the compiler's order: ``alone_A + alone_B + 2 switch(0) + extra``, ``extra`` the
  streaming the shared cache adds (:func:`hardware.pool.cocompiled_costs` against
  :func:`hardware.pool.whole_model_cost`, 0 for the first model). The CSV does not say the order: the fit uses
  the order listed (an assumption); the other order is reported too.

``alone`` is the measured single-model figure of the same CSV column, so the fit tests the co-compilation terms
only; the pair fully predicted (``alone`` = the device model's ``whole_model_cost(X).total_s``) is reported too.

Per pair: ``t_switch_s`` from the co-compiled figure (clipped to [0, 10 ms]), then ``reload_rate_factor`` from
the separate figure given that ``t_switch_s``. Leave-one-out: fit on one pair, predict both figures of the
other (goal: predicted / measured within [0.8, 1.25]). The final constants: least squares on the log ratios of
all four figures (``t_switch_s`` bounded as above), rounded to 3 significant digits; hardware/spec.py's defaults.

    python -m tools.fit_cocompile [--zoo DIR] [--out results]

Writes results/cocompile.md and results/cocompile_fit.json. Needs the zoo models (``python -m tools.build_zoo``
and ``python -m tools.build_zoo --google``).
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from scipy.optimize import brentq, least_squares

from hardware import USB, EdgeTpuSpec, terms
from hardware.pool import cocompiled_costs, whole_model_cost
from tflite_io import OpGraph

ROOT = Path(__file__).resolve().parent.parent

#: zoo file and measured single-model time (ms, x86 Xeon + USB 3, the same CSV column) of each model
MODELS: dict[str, tuple[str, float]] = {
    "MobileNet v1": ("mobilenet_224_int8.tflite", 2.17),
    "MobileNet v2": ("mobilenetv2_224_int8.tflite", 2.29),
    "Inception v1": ("inceptionv1_224_int8.tflite", 3.06),
    "Inception v4": ("inceptionv4_299_int8.tflite", 84.25),
}
#: (A, B, separately compiled ms, co-compiled ms) per alternating pair
PAIRS: tuple[tuple[str, str, float, float], ...] = (
    ("MobileNet v1", "MobileNet v2", 22.61, 7.36),
    ("Inception v1", "Inception v4", 115.71, 100.98),
)
#: the bounds of the fit: t_switch_s in [0, T_SWITCH_MAX_S], reload_rate_factor in [FACTOR_MIN, FACTOR_MAX]
T_SWITCH_MAX_S = 0.010
FACTOR_MIN, FACTOR_MAX = 0.01, 100.0
#: the leave-one-out goal: predicted / measured within this range
GOAL = (0.8, 1.25)
BUILD = "python -m tools.build_zoo && python -m tools.build_zoo --google"

SEPARATE, COCOMPILED = "separate", "co-compiled"


@dataclass(frozen=True)
class ModelTerms:
    """One model's terms of a pair: its measured and predicted time alone (s) and its cached bytes alone."""

    name: str
    alone_measured_s: float
    alone_predicted_s: float
    on_chip_bytes: float


@dataclass(frozen=True)
class PairTerms:
    """An alternating pair (A, B): both models' terms, the co-compiled extra streaming in either order (s), and
    the pair's measured figures (s)."""

    a: ModelTerms
    b: ModelTerms
    extra_ab_s: float
    extra_ba_s: float
    separate_s: float
    cocompiled_s: float

    @property
    def label(self) -> str:
        return f"{self.a.name} + {self.b.name}"

    def measured_s(self, mode: str) -> float:
        return self.separate_s if mode == SEPARATE else self.cocompiled_s


def cocompiled_extra_seconds(graphs: Sequence[OpGraph], spec: EdgeTpuSpec) -> float:
    """The streaming co-compiling ``graphs`` (in that order) adds to running each alone, per request of each."""
    return sum(
        together.stream_s - whole_model_cost(graph, spec).stream_s
        for graph, together in zip(graphs, cocompiled_costs(graphs, spec))
    )


def model_terms(name: str, graph: OpGraph, spec: EdgeTpuSpec, alone_measured_s: float) -> ModelTerms:
    alone = whole_model_cost(graph, spec)
    return ModelTerms(name, alone_measured_s, alone.total_s, float(alone.on_chip_bytes))


def pair_terms(
    a: ModelTerms,
    b: ModelTerms,
    graph_a: OpGraph,
    graph_b: OpGraph,
    spec: EdgeTpuSpec,
    separate_s: float,
    cocompiled_s: float,
) -> PairTerms:
    return PairTerms(
        a,
        b,
        cocompiled_extra_seconds([graph_a, graph_b], spec),
        cocompiled_extra_seconds([graph_b, graph_a], spec),
        separate_s,
        cocompiled_s,
    )


def separate_pair_seconds(spec: EdgeTpuSpec, alone_a: float, alone_b: float, on_chip_a: float, on_chip_b: float) -> float:
    """A, B compiled separately, alternating: each run plus a switch to it that reloads its cached bytes."""
    return float(alone_a + alone_b + terms.switch_seconds(spec, on_chip_a) + terms.switch_seconds(spec, on_chip_b))


def cocompiled_pair_seconds(spec: EdgeTpuSpec, alone_a: float, alone_b: float, extra_s: float) -> float:
    """A, B co-compiled, alternating: each run, two switches that reload nothing, and the streaming the shared
    cache adds (``extra_s``, :func:`cocompiled_extra_seconds`)."""
    return float(alone_a + alone_b + 2 * terms.switch_seconds(spec, 0.0) + extra_s)


def predict(pair: PairTerms, spec: EdgeTpuSpec, mode: str, order: str = "AB", measured_alone: bool = True) -> float:
    """The pair's time (s) under ``spec`` in ``mode``; ``order`` "AB" or "BA" (co-compiled only); ``alone``
    the measured figures or the device model's."""
    alone_a, alone_b = (
        (pair.a.alone_measured_s, pair.b.alone_measured_s)
        if measured_alone
        else (pair.a.alone_predicted_s, pair.b.alone_predicted_s)
    )
    if mode == SEPARATE:
        return separate_pair_seconds(spec, alone_a, alone_b, pair.a.on_chip_bytes, pair.b.on_chip_bytes)
    return cocompiled_pair_seconds(spec, alone_a, alone_b, pair.extra_ab_s if order == "AB" else pair.extra_ba_s)


@dataclass(frozen=True)
class Fit:
    t_switch_s: float
    reload_rate_factor: float
    #: which bound a constant was clipped to ("" where neither was)
    clipped: str = ""

    def spec(self, spec: EdgeTpuSpec) -> EdgeTpuSpec:
        return spec.with_(t_switch_s=self.t_switch_s, reload_rate_factor=self.reload_rate_factor)

    def rounded(self) -> Fit:
        return Fit(sig3(self.t_switch_s), sig3(self.reload_rate_factor), self.clipped)


def sig3(x: float) -> float:
    return float(f"{x:.3g}")


def fit_pair(pair: PairTerms, spec: EdgeTpuSpec) -> Fit:
    """``t_switch_s`` from the co-compiled figure (clipped to its bounds), then ``reload_rate_factor`` from the
    separate figure given it (clipped likewise): each the root of the forward model against the figure."""
    clipped: list[str] = []

    def co(t: float) -> float:
        return predict(pair, spec.with_(t_switch_s=t), COCOMPILED) - pair.cocompiled_s

    if co(0.0) >= 0:
        t = 0.0
        clipped.append("t_switch_s at 0")
    elif co(T_SWITCH_MAX_S) <= 0:
        t = T_SWITCH_MAX_S
        clipped.append("t_switch_s at its maximum")
    else:
        t = float(brentq(co, 0.0, T_SWITCH_MAX_S, xtol=1e-12))

    def sep(log_f: float) -> float:
        return predict(pair, spec.with_(t_switch_s=t, reload_rate_factor=math.exp(log_f)), SEPARATE) - pair.separate_s

    lo, hi = math.log(FACTOR_MIN), math.log(FACTOR_MAX)
    if sep(lo) <= 0:
        f = FACTOR_MIN
        clipped.append("reload_rate_factor at its minimum")
    elif sep(hi) >= 0:
        f = FACTOR_MAX
        clipped.append("reload_rate_factor at its maximum")
    else:
        f = math.exp(float(brentq(sep, lo, hi, xtol=1e-12)))
    return Fit(t, f, "; ".join(clipped))


def fit_joint(pairs: Sequence[PairTerms], spec: EdgeTpuSpec) -> Fit:
    """Least squares on the log ratios predicted / measured of every pair's two figures (listed order),
    ``t_switch_s`` within [0, T_SWITCH_MAX_S], ``reload_rate_factor`` within [FACTOR_MIN, FACTOR_MAX]."""

    def residuals(x: np.ndarray) -> np.ndarray:
        s = spec.with_(t_switch_s=float(x[0]), reload_rate_factor=math.exp(float(x[1])))
        return np.asarray([math.log(predict(p, s, m) / p.measured_s(m)) for p in pairs for m in (SEPARATE, COCOMPILED)])

    per_pair = [fit_pair(p, spec) for p in pairs]
    x0 = [
        float(np.mean([f.t_switch_s for f in per_pair])),
        float(np.mean([math.log(f.reload_rate_factor) for f in per_pair])),
    ]
    lower, upper = [0.0, math.log(FACTOR_MIN)], [T_SWITCH_MAX_S, math.log(FACTOR_MAX)]
    result = least_squares(residuals, x0, bounds=(lower, upper), x_scale=[1e-3, 1.0], xtol=1e-14, ftol=1e-14, gtol=1e-14)
    t, log_f = float(result.x[0]), float(result.x[1])
    clipped = "t_switch_s at 0" if t <= 1e-9 else ("t_switch_s at its maximum" if t >= T_SWITCH_MAX_S - 1e-9 else "")
    return Fit(0.0 if t <= 1e-9 else t, math.exp(log_f), clipped)


def rows_for(fit_on: str, fit: Fit, pairs: Sequence[PairTerms], spec: EdgeTpuSpec) -> list[dict[str, Any]]:
    """Every pair's figures under ``fit`` (the separate one, co-compiled in the listed order and the other):
    measured, predicted with the measured alone times and fully predicted, in ms, and their ratios."""
    s = fit.spec(spec)
    out = []
    for p in pairs:
        role = "final" if fit_on == "both" else ("fitted-on" if p.label == fit_on else "held-out")
        for mode, order in ((SEPARATE, "AB"), (COCOMPILED, "AB"), (COCOMPILED, "BA")):
            measured = p.measured_s(mode)
            pred, full = predict(p, s, mode, order), predict(p, s, mode, order, measured_alone=False)
            names = (p.a.name, p.b.name) if order == "AB" else (p.b.name, p.a.name)
            out.append(
                {
                    "fit_on": fit_on,
                    "pair": p.label,
                    "role": role,
                    "mode": mode,
                    "order": "-" if mode == SEPARATE else f"{names[0]} first",
                    "listed_order": order == "AB",
                    "measured_ms": round(measured * 1e3, 4),
                    "predicted_ms": round(pred * 1e3, 4),
                    "ratio": round(pred / measured, 4),
                    "full_ms": round(full * 1e3, 4),
                    "full_ratio": round(full / measured, 4),
                }
            )
    return out


def within_goal(ratio: float) -> bool:
    return GOAL[0] <= ratio <= GOAL[1]


def table(rows: Sequence[dict[str, Any]]) -> list[str]:
    lines = [
        "| fit on | pair | role | mode | order | measured ms | predicted ms | ratio | fully predicted ms | ratio |",
        "|---|---|---|---|---|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        role = r["role"] + ("" if r["listed_order"] else " (other order)")
        lines.append(
            f"| {r['fit_on']} | {r['pair']} | {role} | {r['mode']} | {r['order']} | {r['measured_ms']:.2f} | "
            f"{r['predicted_ms']:.2f} | {r['ratio']:.3f} | {r['full_ms']:.2f} | {r['full_ratio']:.3f} |"
        )
    return lines


def missing_model(zoo: Path) -> str | None:
    """The error line for the first zoo model missing from ``zoo``; None where all are there."""
    missing = [f for f, _ in MODELS.values() if not (zoo / f).is_file()]
    return f"fit_cocompile: {zoo / missing[0]} missing: build the zoo with `{BUILD}`" if missing else None


def load_pairs(zoo: Path, spec: EdgeTpuSpec) -> list[PairTerms]:
    from respect_pass.partition import load_model

    graphs = {name: load_model(zoo / f).graph for name, (f, _) in MODELS.items()}
    mt = {name: model_terms(name, graphs[name], spec, ms * 1e-3) for name, (_, ms) in MODELS.items()}
    return [pair_terms(mt[a], mt[b], graphs[a], graphs[b], spec, sep * 1e-3, co * 1e-3) for a, b, sep, co in PAIRS]


def report(pairs: Sequence[PairTerms], spec: EdgeTpuSpec) -> tuple[dict[str, Any], list[str]]:
    """The fit's record (the JSON) and its markdown."""
    per_pair = {p.label: fit_pair(p, spec) for p in pairs}
    loo = [r for p in pairs for r in rows_for(p.label, per_pair[p.label], pairs, spec)]
    held = [r for r in loo if r["role"] == "held-out" and r["listed_order"]]
    held_ok = all(within_goal(r["ratio"]) for r in held)
    final = fit_joint(pairs, spec).rounded()
    final_rows = rows_for("both", final, pairs, spec)
    near = 0.8 <= final.reload_rate_factor <= 1.25
    held_ratios = ", ".join(f"{r['ratio']:.3f}" for r in held)
    record: dict[str, Any] = {
        "reload_rate_factor": final.reload_rate_factor,
        "t_switch_s": final.t_switch_s,
        "final_fit": "least squares on the log ratios of the 4 figures (listed order), t_switch_s in [0, 10 ms]",
        "final_clipped": final.clipped,
        "per_pair": {
            k: {"t_switch_s": sig3(f.t_switch_s), "reload_rate_factor": sig3(f.reload_rate_factor), "clipped": f.clipped}
            for k, f in per_pair.items()
        },
        "goal": list(GOAL),
        "loo_within_goal": held_ok,
        "loo": loo,
        "final": final_rows,
        "terms": {
            p.label: {
                "on_chip_mib": [round(p.a.on_chip_bytes / 2**20, 4), round(p.b.on_chip_bytes / 2**20, 4)],
                "alone_predicted_ms": [round(p.a.alone_predicted_s * 1e3, 4), round(p.b.alone_predicted_s * 1e3, 4)],
                "extra_ms_listed_order": round(p.extra_ab_s * 1e3, 4),
                "extra_ms_other_order": round(p.extra_ba_s * 1e3, 4),
            }
            for p in pairs
        },
        "spec": f"{spec.name} (planning_spec: host speed localised to this machine)",
    }
    fmt = "; ".join(
        f"{k}: t_switch {f.t_switch_s * 1e3:.3g} ms, factor {f.reload_rate_factor:.3g}"
        + (f" ({f.clipped})" if f.clipped else "")
        for k, f in per_pair.items()
    )
    md = [
        "# Co-compilation terms: fit to Coral's two-models-on-one-TPU figures",
        "",
        "Written by `python -m tools.fit_cocompile` (module docstring: the model and the fit). Figures: pycoral's",
        "`cocompilation_reference` CSV, x86 Xeon + USB 3, ms per alternating pair (A then B, repeated); the alone",
        "times are the same column's single-model figures (MobileNet v1 2.17, v2 2.29, Inception v1 3.06, v4 84.25 ms).",
        f"Device model: the `{spec.name}` preset (host speed localised to the planning machine).",
        "",
        "## Fitted constants (hardware/spec.py defaults)",
        "",
        f"- `reload_rate_factor` = {final.reload_rate_factor:g}, `t_switch_s` = {final.t_switch_s:g}"
        + (f" ({final.clipped})" if final.clipped else ""),
        "- fit: least squares on the log ratios predicted / measured of all 4 figures (co-compiled in the listed",
        "  order), `t_switch_s` bounded to [0, 10 ms]; rounded to 3 significant digits.",
        f"- per pair (t_switch from the co-compiled figure, clipped; then the factor from the separate one): {fmt}.",
        f"- the fitted reload rate is {final.reload_rate_factor:g} x the streaming bandwidth ("
        + (
            "near it: an independent check that a reload is a pass of the cached bytes over the link)."
            if near
            else "far from it: a reload is not simply a streaming pass)."
        )
        + "",
        "",
        "## Leave-one-out",
        "",
        f"Fit on one pair, predict both figures of the other (co-compiled in the listed order); goal: ratio within "
        f"[{GOAL[0]}, {GOAL[1]}]: {'met' if held_ok else 'NOT met'} "
        f"(held-out ratios {held_ratios}).",
        "",
        *table(loo),
        "",
        "## Final constants on both pairs",
        "",
        *table(final_rows),
        "",
        "Terms (`usb` planning spec): "
        + "; ".join(
            f"{p.label}: on chip {p.a.on_chip_bytes / 2**20:.2f} + {p.b.on_chip_bytes / 2**20:.2f} MiB, co-compiled extra "
            f"streaming {p.extra_ab_s * 1e3:.2f} ms ({p.a.name} first) / {p.extra_ba_s * 1e3:.2f} ms ({p.b.name} first)"
            for p in pairs
        )
        + ".",
        "",
        "## Assumptions",
        "",
        "- The co-compiled order is the order listed (the CSV does not say it); the other order is in the tables.",
        "- The figures are of alternating pairs: every request switches models (one switch per model per pair).",
        "- A separately compiled model reloads all its cached bytes on each switch, and gets the whole cache alone.",
        "- Only x86 + USB 3 has these figures: other hosts keep the factor (their own streaming bandwidth sets the",
        "  reload rate) and `t_switch_s`, an assumption no other host's figure tests.",
        "- The fully predicted columns replace the measured alone times by the device model's (`whole_model_cost`):",
        "  their error includes the single-model error.",
        "",
    ]
    return record, md


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m tools.fit_cocompile", description=__doc__.splitlines()[0])
    ap.add_argument("--zoo", type=Path, default=ROOT / "zoo")
    ap.add_argument("--out", type=Path, default=ROOT / "results")
    args = ap.parse_args(argv)
    error = missing_model(args.zoo)
    if error:
        print(error, file=sys.stderr)
        return 2
    from respect_pass.partition import planning_spec

    spec = planning_spec(USB)
    pairs = load_pairs(args.zoo, spec)
    record, md = report(pairs, spec)
    print("\n".join(md))
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "cocompile.md").write_text("\n".join(md))
    (args.out / "cocompile_fit.json").write_text(json.dumps(record, indent=2) + "\n")
    print(f"wrote {args.out / 'cocompile.md'} and {args.out / 'cocompile_fit.json'}")
    return 0


if __name__ == "__main__":
    logging.disable(logging.WARNING)  # the reader's warnings about ops the Edge TPU lacks are irrelevant here
    sys.exit(main())
