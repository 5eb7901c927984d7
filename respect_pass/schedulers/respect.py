"""The ``respect`` and ``respect+exact`` schedulers.

``respect``: when the graph has only one topological order (VGG, MobileNet,
DenseNet: every op feeds the next) every plan is a contiguous split of it, so
the ``dp`` split is returned as proven optimal with no network call.
Otherwise: features -> policy scores (one call of the numpy network,
:mod:`respect_pass.policy.numpy_net`, K-conditioned; no torch) ->
candidate topological orders -> the ``dp`` split of each, costed as its segments
are written (:func:`respect_pass.schedulers.split.written_splits`) -> the best
by (bottleneck, latency). Candidates, in order of preference on ties: the greedy
decoding, ``samples`` Gumbel-perturbed decodings, and (``heuristics=True``)
two low-crossing orders (:func:`respect_pass.policy.decode.live_order`: the
ready op that leaves the fewest activation bytes live, ties by the policy's
score or by execution order) and the orders ``multiorder`` starts from
(execution, depth, depth-first, libcoral). Duplicate orders are split once; on graphs of 200+ ops at K <= 5
each candidate after the greedy one is split from the range-matrix rows that splits near the greedy
bottleneck can start at (:func:`respect_pass.schedulers.split.bounded_range_costs`: the same split, bit for
bit, in a third to a half of the time). When the greedy plan's bottleneck
already equals a simple lower bound (the slowest single op on its own TPU, or
the total work spread evenly over K TPUs) no other candidate can beat it and
the rest are skipped and the plan says ``optimal`` (for the bottleneck; the
bound is ``lower_bound_ms`` in every latency plan). Otherwise the winner (and the
best by range bottleneck, if that is another candidate) goes through :func:`refine`
(``refine_rounds``): its stages are re-ordered internally in a few ways, single
ops and whole branches of the slowest stage move to a neighbouring stage or are
exchanged with the neighbour's, and ``dp`` may move the cuts, a cheap local search
that never makes a plan worse; the better refined plan wins.

A larger candidate budget where the bound says it can pay (``extra_samples``, off
by default; ``--extra-samples N``): when the best candidate's bottleneck is still
more than :data:`PAY_GAP` above the lower bound, N more perturbed decodings and N
seeded random topological orders (``multiorder``'s source of luck) are split too,
before refinement. Where the bound is met or nearly so, nothing extra is spent.
On the NASNet-style cells of ``tools/bench_hard.py`` N = 24 found no better plan than
the default at 2-4x the time; on the zoo the bound is weak, so it would spend that
time where ``respect`` is already optimal (results/BENCHMARKS.md).

``Plan.stats`` records the bottleneck and latency (ms), the bound, the number
of candidates, which one won, the refine rounds that helped, and the time of
each phase: ``features_ms`` (graph arrays and features), ``policy_ms`` (the
network), ``decode_ms`` (greedy, sampled and heuristic orders), ``split_ms``
(range costs, ``dp`` and refinement).

``respect+exact``: the ``respect`` plan as the CP-SAT warm start of ``exact``.
"""

from __future__ import annotations

import random
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import numpy as np

from hardware import EdgeTpuSpec, as_spec
from hardware.kernel import RangeCosts, lower_bound_s, range_costs
from tflite_io import OpGraph, RespectPassError, StageMapError

from ..objectives import DEFAULT_ALPHA, check_objective, latency_key
from ..orders import (
    depth_first_order,
    depth_order,
    has_unique_order,
    libcoral_topological_order,
    random_topological_order,
    split_order,
)
from ..plan import REL_TOL, Plan, PlanStats
from ..policy.checkpoint import load_policy
from ..policy.decode import greedy_order, live_order, perturbed_orders
from ..policy.features import GraphArrays, graph_arrays, node_features
from ..policy.numpy_net import NumpyPolicy
from .dp import dp_schedule
from .refine import refine
from .split import bottleneck_value, bounded_range_costs, cuts_under, pick_written, uses_rows, written_splits

__all__ = ["respect_schedule", "respect_exact_schedule", "policy_scores", "candidate_orders", "PAY_GAP"]


#: Extra candidates are drawn only while the best plan is this far above the lower bound.
PAY_GAP = 0.02


def policy_scores(net: NumpyPolicy, ga: GraphArrays, num_stages: int) -> np.ndarray:
    """(n,) float64 scores of every op for a ``num_stages``-stage plan."""
    return net.scores(ga, num_stages)


def candidate_orders(
    graph: OpGraph,
    ga: GraphArrays,
    scores: np.ndarray,
    samples: int,
    seed: int,
    temperature: float = 1.0,
    heuristics: bool = True,
) -> list[tuple[str, np.ndarray]]:
    """(name, order) candidates, greedy first, without duplicates."""
    cands = [("greedy", greedy_order(scores, ga))]
    if samples > 0:
        rng = np.random.default_rng(seed)
        cands += [(f"sample{i}", o) for i, o in enumerate(perturbed_orders(scores, ga, samples, rng, temperature))]
    if heuristics:
        cands += [
            ("live", live_order(scores, ga)),
            ("live_execution", live_order(np.zeros(ga.n), ga)),
            ("execution", np.arange(ga.n)),
            ("depth", np.asarray(depth_order(graph))),
            ("depth_first", np.asarray(depth_first_order(graph))),
            ("libcoral", np.asarray(libcoral_topological_order(graph))),
        ]
    return _new_orders(cands, set())


def _new_orders(orders: list[tuple[str, np.ndarray]], seen: set[bytes]) -> list[tuple[str, np.ndarray]]:
    """``orders`` as int64 arrays, each order once and none already in ``seen`` (which grows)."""
    out = []
    for name, order in orders:
        key = np.asarray(order, dtype=np.int64).tobytes()
        if key not in seen:
            seen.add(key)
            out.append((name, np.asarray(order, dtype=np.int64)))
    return out


def _check_k(graph: OpGraph, num_stages: int) -> None:
    n = graph.num_ops
    if not 1 <= num_stages <= max(n, 1):
        raise StageMapError(
            f"number of segments must be between 1 and the {n} ops of the model, got {num_stages}", num_stages
        )


def _extra_orders(
    graph: OpGraph,
    ga: GraphArrays,
    scores: np.ndarray,
    count: int,
    seed: int,
    temperature: float,
    have: list[tuple[str, np.ndarray]],
) -> list[tuple[str, np.ndarray]]:
    """``count`` more perturbed decodings and ``count`` seeded random topological orders, new ones only."""
    rng = np.random.default_rng((seed, 2))
    orders = [(f"extra{i}", o) for i, o in enumerate(perturbed_orders(scores, ga, count, rng, temperature))]
    pyrng = random.Random(seed)
    orders += [(f"random{i}", np.asarray(random_topological_order(graph, pyrng))) for i in range(count)]
    return _new_orders(orders, {np.asarray(o, dtype=np.int64).tobytes() for _, o in have})


def _unique_order_plan(
    graph: OpGraph, num_stages: int, spec: EdgeTpuSpec, objective: str, alpha: float, samples: int, t0: float
) -> Plan:
    """The ``dp`` split of a graph's only topological order: optimal, no network needed."""
    plan = dp_schedule(graph, num_stages, spec, objective=objective, alpha=alpha)
    bound = plan.stats.number("bottleneck_ms") if "bottleneck_ms" in plan.stats else None
    stats = plan.stats.with_(refined_rounds=0, samples=samples, candidates=1, best_order="unique")
    if bound is not None:
        stats = stats.with_(bound_ms=bound)
    return Plan(
        plan.stages,
        num_stages,
        "respect",
        objective=objective,
        optimal=True,
        lower_bound_ms=bound,
        solve_seconds=time.perf_counter() - t0,
        stats=stats,
    )


def respect_schedule(
    graph: OpGraph,
    num_stages: int,
    cost: EdgeTpuSpec | None = None,
    *,
    samples: int = 8,
    seed: int = 0,
    checkpoint: str | Path | None = None,
    objective: str = "latency",
    alpha: float = DEFAULT_ALPHA,
    temperature: float | None = None,
    heuristics: bool = True,
    refine_rounds: int = 4,
    one_order_shortcut: bool = True,
    extra_samples: int = 0,
) -> Plan:
    """The learned scheduler: best ``dp`` split over the policy's greedy and sampled orders (see module doc).
    ``one_order_shortcut=False`` runs the network even on a graph with one topological order (benchmarks)."""
    t0 = time.perf_counter()
    if samples < 0:
        raise RespectPassError(f"--samples must be >= 0, got {samples}")
    if extra_samples < 0:
        raise RespectPassError(f"--extra-samples must be >= 0, got {extra_samples}")
    check_objective(objective)
    _check_k(graph, num_stages)
    spec = as_spec(cost)
    if one_order_shortcut and has_unique_order(graph):
        return _unique_order_plan(graph, num_stages, spec, objective, alpha, samples, t0)
    net, meta = load_policy(checkpoint)
    if temperature is None:
        temperature = float(meta.get("metrics", {}).get("sample_temperature", 1.0))
    t1 = time.perf_counter()
    ga = graph_arrays(graph, spec)
    x = node_features(ga, num_stages)
    t2 = time.perf_counter()
    scores = net(x, ga.src, ga.dst).astype(np.float64)
    t3 = time.perf_counter()
    stats: list[tuple[str, int | float | str]] = []
    optimal, lower_bound_ms = None, None
    extra = 0
    if objective == "latency":
        greedy = greedy_order(scores, ga)
        t4 = time.perf_counter()
        rc0 = range_costs(ga, greedy)
        b0 = bottleneck_value(rc0, num_stages)
        bound = lower_bound_s(ga, num_stages)
        execution = np.arange(graph.num_ops)
        exec_rc: list[RangeCosts] = []  # the execution order's matrices, kept for the floor below
        hint: list[list[int]] = []  # the greedy split's cuts, found when a candidate first needs them

        def ranges(orders: list[tuple[str, np.ndarray]], first: RangeCosts | None = None) -> Iterator[RangeCosts]:
            for i, (_, order) in enumerate(orders):  # one candidate's matrices alive at a time
                if i == 0 and first is not None:
                    rc = first
                elif not exec_rc and np.array_equal(order, execution):  # whole: the floor below needs them
                    rc = range_costs(ga, order)
                    exec_rc.append(rc)
                else:  # the rows the splits near the greedy bottleneck use (the same splits)
                    if not hint and uses_rows(graph.num_ops, num_stages) and np.isfinite(b0):
                        hint.append(cuts_under(rc0, num_stages, b0)[0])
                    rc = bounded_range_costs(ga, order, num_stages, b0, hint[0] if hint else ())
                yield rc

        if b0 <= bound * (1 + REL_TOL):  # nothing can beat it
            cands = [("greedy", greedy)]
        else:
            t = time.perf_counter()
            cands = candidate_orders(graph, ga, scores, samples, seed, temperature, heuristics)
            t4 += time.perf_counter() - t
        entries = written_splits(ga, ranges(cands, rc0), num_stages, known=(b0,))
        try:
            picks = pick_written(entries)
        except ValueError:
            raise StageMapError(f"no valid {num_stages}-stage split of any candidate order", num_stages) from None
        if extra_samples > 0 and picks[0][2] > bound * (1 + PAY_GAP):  # the bound says more can pay
            more = _extra_orders(graph, ga, scores, extra_samples, seed, temperature, cands)
            extra = len(more)
            if more:
                entries += written_splits(ga, ranges(more), num_stages, start=len(cands))
                cands += more
                picks = pick_written(entries)
        # refine the best written plan, and the best by range bottleneck where that is another candidate
        results = []
        for best, cuts, bottleneck, latency in picks:
            order, improved = cands[best][1], 0
            if refine_rounds > 0 and bottleneck > bound * (1 + REL_TOL):
                rng = np.random.default_rng((seed, 1))
                order, cuts, (bottleneck, latency), improved = refine(
                    ga, scores, order, cuts, (bottleneck, latency), num_stages, refine_rounds, rng
                )
            results.append(((bottleneck, latency), cands[best][0], order, cuts, improved))
        (bottleneck, latency), name, order, cuts, improved = min(results, key=lambda r: r[0])
        stages = split_order(order.tolist(), cuts, graph.num_ops)
        # the candidates were ranked on their ranges; the dp split of the execution order (exact for the
        # written segments, shared link included) is a floor the plan must not be worse than
        try:
            floor = dp_schedule(graph, num_stages, spec, arrays=ga, ranges=exec_rc[0] if exec_rc else None)
        except StageMapError:
            floor = None  # the execution order has no K-split
        if floor is not None:
            floor_key = tuple(floor.stats.number(k) / 1e3 for k in ("bottleneck_ms", "latency_ms"))
            if floor_key < (bottleneck * (1 - REL_TOL), latency):
                stages, (bottleneck, latency), name = floor.stages, floor_key, "execution"
        stats += [
            ("bottleneck_ms", bottleneck * 1e3),
            ("latency_ms", latency * 1e3),
            ("bound_ms", bound * 1e3),
            ("refined_rounds", improved),
        ]
        lower_bound_ms = bound * 1e3
        optimal = True if bottleneck <= bound * (1 + REL_TOL) else None  # the bottleneck is proven optimal
    else:
        cands = candidate_orders(graph, ga, scores, samples, seed, temperature, heuristics)
        t4 = time.perf_counter()
        found: tuple[float, str, Plan] | None = None
        for name, order in cands:
            try:
                plan = dp_schedule(graph, num_stages, spec, objective=objective, alpha=alpha, order=order.tolist())
            except StageMapError:
                continue
            value = plan.stats.number("objective_value")
            if found is None or value < found[0]:
                found = (value, name, plan)
        if found is None:
            raise StageMapError(f"no valid {num_stages}-stage split of any candidate order", num_stages)
        value, name, plan = found
        stages = plan.stages
        stats.append(("objective_value", value))
    t5 = time.perf_counter()
    decode = t4 - t3
    stats += [
        ("samples", samples),
        ("candidates", len(cands)),
        ("extra_candidates", extra),
        ("best_order", name),
        ("load_ms", (t1 - t0) * 1e3),
        ("features_ms", (t2 - t1) * 1e3),
        ("policy_ms", (t3 - t2) * 1e3),
        ("decode_ms", decode * 1e3),
        ("split_ms", (t5 - t3 - decode) * 1e3),
    ]
    return Plan(
        tuple(stages),
        num_stages,
        "respect",
        objective=objective,
        optimal=optimal,
        lower_bound_ms=lower_bound_ms,
        solve_seconds=t5 - t0,
        stats=PlanStats(stats),
    )


def respect_exact_schedule(
    graph: OpGraph,
    num_stages: int,
    cost: EdgeTpuSpec | None = None,
    *,
    time_limit_s: float = 30.0,
    workers: int = 2,
    samples: int = 8,
    seed: int = 0,
    objective: str = "latency",
    alpha: float = DEFAULT_ALPHA,
    checkpoint: str | Path | None = None,
) -> Plan:
    """``exact`` (CP-SAT) warm-started from the ``respect`` plan; never worse than that plan."""
    from .exact import exact_schedule  # OR-Tools only when asked for

    t0 = time.perf_counter()
    spec = as_spec(cost)
    hint = respect_schedule(
        graph, num_stages, spec, samples=samples, seed=seed, checkpoint=checkpoint, objective=objective, alpha=alpha
    )
    if hint.stats.get("best_order") == "unique":  # already proven: nothing for CP-SAT to do
        return replace(hint, scheduler="respect+exact", solve_seconds=time.perf_counter() - t0)
    plan = exact_schedule(
        graph,
        num_stages,
        spec,
        objective=objective,
        alpha=alpha,
        time_limit_s=time_limit_s,
        workers=workers,
        hint=hint.stages,
        seed=seed,
    )
    if objective == "latency":
        mine = latency_key(graph, hint.stages, num_stages, spec)
        theirs = latency_key(graph, plan.stages, num_stages, spec)
        if mine[0] < theirs[0] * (1 - REL_TOL):  # CP-SAT lost the hint: keep the policy's plan
            plan = replace(plan, stages=hint.stages, stage_ms=None, optimal=False)
    stats = plan.stats.with_(
        respect_ms=hint.solve_seconds * 1e3, respect_bottleneck_ms=hint.stats.number("bottleneck_ms", float("nan"))
    )
    return replace(plan, scheduler="respect+exact", solve_seconds=time.perf_counter() - t0, stats=stats)
