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
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, replace
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
from ..plan import REL_TOL, Plan, PlanStats, StatValue
from ..policy.checkpoint import load_policy
from ..policy.decode import greedy_order, live_order, perturbed_orders
from ..policy.features import GraphArrays, graph_arrays, node_features
from ..policy.numpy_net import NumpyPolicy
from .dp import dp_schedule
from .refine import refine
from .split import (
    Written,
    bottleneck_value,
    bounded_range_costs,
    cuts_under,
    pick_written,
    uses_rows,
    written_splits,
)

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


@dataclass(frozen=True)
class _Options:
    """The search knobs of one ``respect`` call (temperature resolved against the checkpoint)."""

    samples: int
    seed: int
    temperature: float
    heuristics: bool
    refine_rounds: int
    extra_samples: int
    objective: str
    alpha: float


@dataclass(frozen=True)
class _PolicyRun:
    """The network's view of a graph: arrays, op scores, and when each phase ended (``perf_counter`` s)."""

    ga: GraphArrays
    scores: np.ndarray
    temperature: float
    loaded_at: float
    featured_at: float
    scored_at: float


@dataclass(frozen=True)
class _Pick:
    """A candidate worth refining: its index, cuts and written (period, latency) in seconds."""

    candidate: int
    cuts: tuple[int, ...]
    key: tuple[float, float]


@dataclass(frozen=True)
class _Ranked:
    """Every candidate order split: the candidates, the picks to refine, the extra candidates drawn."""

    candidates: tuple[tuple[str, np.ndarray], ...]
    picks: tuple[_Pick, ...]
    extra: int


@dataclass(frozen=True)
class _Refined:
    """A pick after :func:`refine`: its (period, latency) in seconds, candidate name, order, cuts, rounds that helped."""

    key: tuple[float, float]
    name: str
    order: np.ndarray
    cuts: tuple[int, ...]
    improved: int


@dataclass(frozen=True)
class _Winner:
    """The plan a latency search returns: stage map, (period, latency) in seconds and the order it came from."""

    stages: tuple[int, ...]
    key: tuple[float, float]
    name: str


@dataclass(frozen=True)
class _Search:
    """What a search found: the stage map, the winning order, its stats and the candidate counts."""

    stages: tuple[int, ...]
    best_order: str
    stats: tuple[tuple[str, StatValue], ...]
    candidates: int
    extra_candidates: int
    decode_s: float
    optimal: bool | None = None
    lower_bound_ms: float | None = None


class _CandidateRanges:
    """Range costs of candidate orders, one candidate's matrices alive at a time.

    The execution order's whole matrices are kept (:attr:`execution_rc`: the floor of
    :func:`_with_floor` reuses them); any other order is costed on the rows that splits near
    the greedy bottleneck can start at (the same splits), from the greedy split's cuts, found
    when a candidate first needs them."""

    def __init__(self, ga: GraphArrays, num_stages: int, greedy_rc: RangeCosts, greedy_bottleneck: float) -> None:
        self.ga = ga
        self.num_stages = num_stages
        self.greedy_rc = greedy_rc
        self.greedy_bottleneck = greedy_bottleneck
        self.execution_rc: RangeCosts | None = None
        self._execution = np.arange(ga.n)
        self._greedy_cuts: list[int] | None = None

    def of(self, orders: Sequence[tuple[str, np.ndarray]], first: RangeCosts | None = None) -> Iterator[RangeCosts]:
        """The range costs of each order in turn (``first``: the first order's, already known)."""
        for i, (_, order) in enumerate(orders):
            yield first if i == 0 and first is not None else self._costs(order)

    def _costs(self, order: np.ndarray) -> RangeCosts:
        """One order's range costs: whole for the execution order the first time, else bounded rows."""
        if self.execution_rc is None and np.array_equal(order, self._execution):
            self.execution_rc = range_costs(self.ga, order)
            return self.execution_rc
        return bounded_range_costs(self.ga, order, self.num_stages, self.greedy_bottleneck, self._cuts_hint())

    def _cuts_hint(self) -> Sequence[int]:
        """The greedy split's cuts where bounded rows use them (found once), else none."""
        n, k, b0 = self.ga.n, self.num_stages, self.greedy_bottleneck
        if self._greedy_cuts is None and uses_rows(n, k) and np.isfinite(b0):
            self._greedy_cuts = cuts_under(self.greedy_rc, k, b0)[0]
        return self._greedy_cuts if self._greedy_cuts is not None else ()


def _check_counts(samples: int, extra_samples: int) -> None:
    """Raise RespectPassError on a negative sample count."""
    if samples < 0:
        raise RespectPassError(f"--samples must be >= 0, got {samples}")
    if extra_samples < 0:
        raise RespectPassError(f"--extra-samples must be >= 0, got {extra_samples}")


def _run_policy(
    graph: OpGraph, num_stages: int, spec: EdgeTpuSpec, checkpoint: str | Path | None, temperature: float | None
) -> _PolicyRun:
    """The checkpoint's scores of every op, the sampling temperature, and the time each phase ended."""
    net, meta = load_policy(checkpoint)
    if temperature is None:
        temperature = float(meta.get("metrics", {}).get("sample_temperature", 1.0))
    loaded_at = time.perf_counter()
    ga = graph_arrays(graph, spec)
    x = node_features(ga, num_stages)
    featured_at = time.perf_counter()
    scores = net(x, ga.src, ga.dst).astype(np.float64)
    return _PolicyRun(ga, scores, temperature, loaded_at, featured_at, time.perf_counter())


def _picks(entries: list[Written]) -> tuple[_Pick, ...]:
    """:func:`pick_written`'s choices as named picks (ValueError if there is no entry)."""
    return tuple(_Pick(index, tuple(cuts), (period, latency)) for index, cuts, period, latency in pick_written(entries))


def _ranked_splits(
    graph: OpGraph,
    run: _PolicyRun,
    opts: _Options,
    candidates: list[tuple[str, np.ndarray]],
    ranges: _CandidateRanges,
    bound: float,
) -> _Ranked:
    """The written split of every candidate, plus the extra ones where the bound says more can pay."""
    num_stages = ranges.num_stages
    entries = written_splits(run.ga, ranges.of(candidates, ranges.greedy_rc), num_stages, known=(ranges.greedy_bottleneck,))
    try:
        picks = _picks(entries)
    except ValueError:
        raise StageMapError(f"no valid {num_stages}-stage split of any candidate order", num_stages) from None
    extra = 0
    if opts.extra_samples > 0 and picks[0].key[0] > bound * (1 + PAY_GAP):  # the bound says more can pay
        more = _extra_orders(graph, run.ga, run.scores, opts.extra_samples, opts.seed, run.temperature, candidates)
        extra = len(more)
        if more:
            entries += written_splits(run.ga, ranges.of(more), num_stages, start=len(candidates))
            candidates = candidates + more
            picks = _picks(entries)
    return _Ranked(tuple(candidates), picks, extra)


def _refined(run: _PolicyRun, opts: _Options, ranked: _Ranked, pick: _Pick, num_stages: int, bound: float) -> _Refined:
    """``pick`` after :func:`refine` (as it is where refinement is off or the bound is met)."""
    name, order = ranked.candidates[pick.candidate]
    if opts.refine_rounds <= 0 or pick.key[0] <= bound * (1 + REL_TOL):
        return _Refined(pick.key, name, order, pick.cuts, 0)
    rng = np.random.default_rng((opts.seed, 1))
    order, cuts, key, improved = refine(
        run.ga, run.scores, order, list(pick.cuts), pick.key, num_stages, opts.refine_rounds, rng
    )
    return _Refined(key, name, order, tuple(cuts), improved)


def _with_floor(
    graph: OpGraph, num_stages: int, spec: EdgeTpuSpec, run: _PolicyRun, ranges: _CandidateRanges, best: _Refined
) -> _Winner:
    """``best``, or the ``dp`` split of the execution order where that is better.

    The candidates were ranked on their ranges; the dp split of the execution order (exact for the
    written segments, shared link included) is a floor the plan must not be worse than."""
    stages = split_order(best.order.tolist(), list(best.cuts), graph.num_ops)
    try:
        floor = dp_schedule(graph, num_stages, spec, arrays=run.ga, ranges=ranges.execution_rc)
    except StageMapError:
        return _Winner(tuple(stages), best.key, best.name)  # the execution order has no K-split
    floor_key = (floor.stats.number("bottleneck_ms") / 1e3, floor.stats.number("latency_ms") / 1e3)
    if floor_key < (best.key[0] * (1 - REL_TOL), best.key[1]):
        return _Winner(tuple(floor.stages), floor_key, "execution")
    return _Winner(tuple(stages), best.key, best.name)


def _latency_search(graph: OpGraph, num_stages: int, spec: EdgeTpuSpec, run: _PolicyRun, opts: _Options) -> _Search:
    """The best written split over the candidate orders, refined, never worse than the execution order's."""
    greedy = greedy_order(run.scores, run.ga)
    decode_s = time.perf_counter() - run.scored_at
    greedy_rc = range_costs(run.ga, greedy)
    ranges = _CandidateRanges(run.ga, num_stages, greedy_rc, bottleneck_value(greedy_rc, num_stages))
    bound = lower_bound_s(run.ga, num_stages)
    if ranges.greedy_bottleneck <= bound * (1 + REL_TOL):  # nothing can beat it
        candidates = [("greedy", greedy)]
    else:
        started = time.perf_counter()
        candidates = candidate_orders(graph, run.ga, run.scores, opts.samples, opts.seed, run.temperature, opts.heuristics)
        decode_s += time.perf_counter() - started
    ranked = _ranked_splits(graph, run, opts, candidates, ranges, bound)
    # refine the best written plan, and the best by range bottleneck where that is another candidate
    best = min((_refined(run, opts, ranked, pick, num_stages, bound) for pick in ranked.picks), key=lambda r: r.key)
    winner = _with_floor(graph, num_stages, spec, run, ranges, best)
    bottleneck, latency = winner.key
    stats = (
        ("bottleneck_ms", bottleneck * 1e3),
        ("latency_ms", latency * 1e3),
        ("bound_ms", bound * 1e3),
        ("refined_rounds", best.improved),
    )
    return _Search(
        winner.stages,
        winner.name,
        stats,
        len(ranked.candidates),
        ranked.extra,
        decode_s,
        optimal=True if bottleneck <= bound * (1 + REL_TOL) else None,  # the bottleneck is proven optimal
        lower_bound_ms=bound * 1e3,
    )


def _objective_search(graph: OpGraph, num_stages: int, spec: EdgeTpuSpec, run: _PolicyRun, opts: _Options) -> _Search:
    """The candidate order whose ``dp`` split has the least objective value (the first on ties)."""
    candidates = candidate_orders(graph, run.ga, run.scores, opts.samples, opts.seed, run.temperature, opts.heuristics)
    decode_s = time.perf_counter() - run.scored_at
    found: tuple[float, str, Plan] | None = None
    for name, order in candidates:
        try:
            plan = dp_schedule(graph, num_stages, spec, objective=opts.objective, alpha=opts.alpha, order=order.tolist())
        except StageMapError:
            continue
        value = plan.stats.number("objective_value")
        if found is None or value < found[0]:
            found = (value, name, plan)
    if found is None:
        raise StageMapError(f"no valid {num_stages}-stage split of any candidate order", num_stages)
    value, name, plan = found
    return _Search(tuple(plan.stages), name, (("objective_value", value),), len(candidates), 0, decode_s)


def _respect_plan(num_stages: int, opts: _Options, run: _PolicyRun, search: _Search, started: float) -> Plan:
    """The plan of a search, its stats followed by the candidate counts and the time of each phase."""
    done = time.perf_counter()
    stats = search.stats + (
        ("samples", opts.samples),
        ("candidates", search.candidates),
        ("extra_candidates", search.extra_candidates),
        ("best_order", search.best_order),
        ("load_ms", (run.loaded_at - started) * 1e3),
        ("features_ms", (run.featured_at - run.loaded_at) * 1e3),
        ("policy_ms", (run.scored_at - run.featured_at) * 1e3),
        ("decode_ms", search.decode_s * 1e3),
        ("split_ms", (done - run.scored_at - search.decode_s) * 1e3),
    )
    return Plan(
        search.stages,
        num_stages,
        "respect",
        objective=opts.objective,
        optimal=search.optimal,
        lower_bound_ms=search.lower_bound_ms,
        solve_seconds=done - started,
        stats=PlanStats(stats),
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
    started = time.perf_counter()
    _check_counts(samples, extra_samples)
    check_objective(objective)
    _check_k(graph, num_stages)
    spec = as_spec(cost)
    if one_order_shortcut and has_unique_order(graph):
        return _unique_order_plan(graph, num_stages, spec, objective, alpha, samples, started)
    run = _run_policy(graph, num_stages, spec, checkpoint, temperature)
    opts = _Options(samples, seed, run.temperature, heuristics, refine_rounds, extra_samples, objective, alpha)
    search = _latency_search if objective == "latency" else _objective_search
    return _respect_plan(num_stages, opts, run, search(graph, num_stages, spec, run, opts), started)


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
