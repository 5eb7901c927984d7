"""The ``exact`` scheduler: CP-SAT (OR-Tools) over all monotone stage maps, proving optimality.

The model (downset encoding, integer time units, objectives) is in
:mod:`.exact_model`. Solving (:func:`_optimise`): each objective runs with
CP-SAT's presolve for half its time, then without it (memory: only without),
warm-started from the best map so far with a complete hint.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from hardware import EdgeTpuSpec, as_spec, pipeline_period_ms, stage_costs
from hardware.cost import shared_link_ms
from tflite_io import OpGraph, RespectPassError, StageMapError, validate_stage_map

from ..objectives import DEFAULT_ALPHA, check_objective, latency_key, memory_objective
from ..plan import REL_TOL, Plan, PlanStats

if TYPE_CHECKING:  # OR-Tools costs ~0.5 s to import: only when exact runs, not when the registry loads
    from ortools.sat.python import cp_model

    from .exact_model import ExactModel

__all__ = ["exact_schedule", "default_hint"]

log = logging.getLogger(__name__)

#: integer time units round each per-op time and the stream rate; a plan within this of the bound meets it
_BOUND_REL = 1e-6


def default_hint(
    graph: OpGraph, num_stages: int, spec: EdgeTpuSpec, objective: str = "latency", alpha: float = DEFAULT_ALPHA
) -> tuple[int, ...] | None:
    """The ``dp`` plan (best contiguous split of the execution order), else the ``compiler`` plan, if valid."""
    from .compiler import compiler_schedule

    candidates = [lambda: compiler_schedule(graph, num_stages, spec)]
    try:
        from .dp import dp_schedule

        candidates.insert(0, lambda: dp_schedule(graph, num_stages, spec, objective=objective, alpha=alpha))
    except ImportError:
        pass
    for make in candidates:
        try:
            return validate_stage_map(graph, make().stages, num_stages)
        except RespectPassError as exc:
            log.debug("exact: no hint from a scheduler: %s", exc)
        except Exception as exc:  # noqa: BLE001 - a broken hint source must not break the exact solver
            log.warning("exact: hint scheduler failed (%s: %s); solving without it", type(exc).__name__, exc)
    return None


def _solve(model: ExactModel, limit: float, workers: int, seed: int, presolve: bool) -> tuple[cp_model.CpSolver, int]:
    from ortools.sat.python import cp_model

    solver = cp_model.CpSolver()
    p = solver.parameters
    p.max_time_in_seconds, p.num_workers, p.random_seed = max(limit, 1e-3), max(1, workers), seed
    # OR-Tools 9.15 presolve (ProcessAtMostOneAndLinear, google/or-tools#5293) can certify a wrong optimum
    # on this model; its inclusion detection is switched off (checked against the brute-force oracle).
    p.presolve_inclusion_work_limit = 0
    p.cp_model_probing_level = 1  # full probing costs seconds of presolve on 500-op models and rarely pays
    p.cp_model_presolve = presolve
    status = solver.solve(model.m)
    if status == cp_model.MODEL_INVALID:
        raise RuntimeError(f"exact: CP-SAT rejected the model: {model.m.validate()}")
    return solver, int(status)


@dataclass
class _Outcome:
    """What :func:`_optimise` found: best map and its value, proven bound, optimality, solver effort."""

    stages: tuple[int, ...] | None = None
    value: int | None = None
    bound: float = -math.inf
    optimal: bool = False
    found: bool = False
    infeasible: bool = False
    branches: int = 0
    wall_s: float = 0.0


def _optimise(
    model: ExactModel, limit: float, workers: int, seed: int, presolve_share: float, start: Sequence[int] | None
) -> _Outcome:
    """Minimise the objective in ``limit`` s: with presolve for ``presolve_share`` of it, then without,
    warm-started from the best map so far. Presolve makes most real models fast, but on some (NAS-like
    cells) it hides the indicator rows from the LP and the bound stalls. A presolved run whose bound
    beats a known map, or that says infeasible, is not trusted (google/or-tools#5293, #5274)."""
    from ortools.sat.python import cp_model

    t0 = time.perf_counter()
    out = _Outcome(tuple(start), model.value(start)) if start is not None else _Outcome()
    if start is not None:
        model.hint(start)
    runs = [(True, limit * presolve_share)] if presolve_share > 0 else []
    for presolve, budget in runs + [(False, math.inf)]:
        budget = min(budget, limit - (time.perf_counter() - t0))
        if budget <= 0 and out.stages is not None:
            break
        solver, status = _solve(model, budget, workers, seed, presolve)
        out.branches, out.wall_s = out.branches + solver.num_branches, out.wall_s + solver.wall_time
        if status == cp_model.INFEASIBLE:
            if presolve and out.stages is None:
                continue  # confirm without presolve
            out.infeasible = out.stages is None
            if not out.infeasible:
                log.warning("exact: CP-SAT reported infeasible despite a valid map (solver bug); ignored")
            continue
        if status in (cp_model.OPTIMAL, cp_model.FEASIBLE):
            out.found, stages = True, model.stages(solver)
            if out.value is None or model.value(stages) < out.value:
                out.stages, out.value = stages, model.value(stages)
                model.hint(stages)
        bound = solver.best_objective_bound
        if out.value is not None and bound > out.value + 0.5 + REL_TOL * abs(bound):
            log.warning(
                "exact: CP-SAT's bound %.0f exceeds a known map's value %d (solver presolve bug); bound ignored",
                bound,
                out.value,
            )
            continue
        if math.isfinite(bound):
            out.bound = max(out.bound, bound)
        if status == cp_model.OPTIMAL or (out.value is not None and out.bound >= out.value):
            out.optimal = True
            break
    return out


@dataclass(frozen=True)
class _Solved:
    """The map CP-SAT settled on, its effort over the passes so far, and whether the latency pass was proven."""

    stages: tuple[int, ...]
    branches: int
    wall_s: float
    latency_optimal: bool | None = None


def _check_k(graph: OpGraph, num_stages: int) -> None:
    """Raise StageMapError unless 1 <= ``num_stages`` <= the graph's ops."""
    n = graph.num_ops
    if not 1 <= num_stages <= max(n, 1):
        raise StageMapError(
            f"number of segments must be between 1 and the {n} ops of the model, got {num_stages}", num_stages
        )


def _first_map(first: _Outcome, num_stages: int, time_limit_s: float) -> _Solved:
    """The primary pass's map and effort; StageMapError where no map exists or none was found."""
    if first.infeasible:
        raise StageMapError(
            f"no valid {num_stages}-stage pipeline exists: every stage must be non-empty, every op "
            "producing a model output (and every op after it) must be in the last stage, and "
            "every model input must be read by the first stage; use fewer segments",
            num_stages,
        )
    if first.stages is None:
        raise StageMapError(
            f"exact: no valid {num_stages}-stage plan found within {time_limit_s} s and no hint "
            "to fall back on; raise the time limit",
            num_stages,
        )
    if not first.found:
        log.warning("exact: no solution within %.3g s; returning the hint plan", time_limit_s)
    return _Solved(first.stages, first.branches, first.wall_s)


def _least_latency(
    model: ExactModel, bottleneck: int, solved: _Solved, time_left_s: float, workers: int, seed: int
) -> _Solved:
    """The tie-break: least latency among the maps within REL_TOL of the minimum ``bottleneck`` (time units)."""
    model.m.add(model.bottleneck <= bottleneck + math.ceil(bottleneck * REL_TOL))
    model.minimize("total")
    second = _optimise(model, time_left_s, workers, seed, 0.5, solved.stages)
    return _Solved(
        second.stages or solved.stages, solved.branches + second.branches, solved.wall_s + second.wall_s, second.optimal
    )


@dataclass(frozen=True)
class _Quality:
    """How good the final map is proven to be: optimality, the bound in ms (latency) and the objective stats."""

    optimal: bool
    lower_bound_ms: float | None
    stats: tuple[tuple[str, int | float], ...]


def _latency_quality(first: _Outcome, unit_s: float, period_ms: float, rounding: float = 0.0) -> _Quality:
    """The device-model period against the relaxation's bound: optimal only where the plan meets it, within
    the coefficients' ``rounding`` to whole units (or :data:`_BOUND_REL`, whichever is larger)."""
    lower_bound_ms = min(first.bound * unit_s * 1e3, period_ms) if math.isfinite(first.bound) else None
    slack = max(_BOUND_REL, rounding)
    optimal = first.optimal and lower_bound_ms is not None and period_ms <= lower_bound_ms * (1 + slack)
    return _Quality(optimal, lower_bound_ms, (("objective_value", period_ms), ("relaxation_optimal", int(first.optimal))))


def _memory_quality(first: _Outcome, value: float, alpha_denominator: int) -> _Quality:
    """The memory objective's value and, where the solver has one, its bound in the same units."""
    stats: tuple[tuple[str, int | float], ...] = (("objective_value", value),)
    if math.isfinite(first.bound):
        stats += (("objective_bound", first.bound / alpha_denominator),)
    return _Quality(first.optimal, None, stats)


def _exact_plan(
    graph: OpGraph,
    stages: tuple[int, ...],
    num_stages: int,
    spec: EdgeTpuSpec,
    objective: str,
    alpha: float,
    model: ExactModel,
    first: _Outcome,
    solved: _Solved,
    started: float,
) -> Plan:
    """The plan of the final map, re-costed by the device model, with what the primary pass proved."""
    costs = stage_costs(graph, stages, num_stages, spec)
    stage_ms = tuple(c.ms for c in costs)
    if objective == "latency":  # optimal only where the plan meets the relaxation's bound
        judged = _latency_quality(first, model.unit_s, pipeline_period_ms(costs, spec), model.rounding)
    else:
        judged = _memory_quality(first, memory_objective(graph, stages, num_stages, alpha), model.alpha_pq[1])
    stats: list[tuple[str, int | float]] = []
    if solved.latency_optimal is not None:
        stats.append(("latency_optimal", int(solved.latency_optimal)))
    stats += [*judged.stats, ("branches", solved.branches), ("wall_s", solved.wall_s)]
    seconds = time.perf_counter() - started
    log.info(
        "exact: K=%d %s objective, %s in %.2f s, bottleneck %.4f ms",
        num_stages,
        objective,
        "optimal" if judged.optimal else "not proven optimal",
        seconds,
        max(stage_ms),
    )
    return Plan(
        stages,
        num_stages,
        "exact",
        objective=objective,
        stage_ms=stage_ms,
        link_ms=shared_link_ms(costs, spec),
        optimal=judged.optimal,
        lower_bound_ms=judged.lower_bound_ms,
        solve_seconds=seconds,
        stats=PlanStats(stats),
    )


def exact_schedule(
    graph: OpGraph,
    num_stages: int,
    cost: EdgeTpuSpec | None = None,
    *,
    objective: str = "latency",
    alpha: float = DEFAULT_ALPHA,
    time_limit_s: float = 30.0,
    workers: int = 2,
    hint: Sequence[int] | None = None,
    seed: int = 0,
) -> Plan:
    """Optimal K-stage plan by CP-SAT; ``optimal`` says whether the primary objective was proven.

    ``latency``: minimum bottleneck (80% of ``time_limit_s``), then minimum
    latency among the (near-)minimum bottlenecks; ``lower_bound_ms`` is the
    solver's bound on the bottleneck. ``memory``: minimum ``alpha * max_k P_k +
    crossings``, its bound in ``stats`` as ``objective_bound``. ``hint`` is a
    valid stage map to warm-start from (a StageMapError if it is not; default:
    :func:`default_hint`); it is returned, with ``optimal=False``, when no
    solution is found in time. Raises :class:`StageMapError` when no valid
    K-stage map exists.
    """
    started = time.perf_counter()
    check_objective(objective)
    spec = as_spec(cost)
    K = num_stages
    _check_k(graph, K)
    hint = validate_stage_map(graph, hint, K) if hint is not None else default_hint(graph, K, spec, objective, alpha)
    from .exact_model import ExactModel

    model = ExactModel(graph, K, spec, objective, alpha)
    latency = objective == "latency"
    model.minimize("bottleneck" if latency else "memory")
    # Presolve hides the memory model's crossing rows from the LP (its bound collapses to alpha * P_max).
    first = _optimise(model, time_limit_s * (0.8 if latency else 1.0), workers, seed, 0.5 if latency else 0.0, hint)
    solved = _first_map(first, K, time_limit_s)
    if latency and first.value is not None:  # tie-break: least latency among (near-)minimum bottlenecks
        solved = _least_latency(model, first.value, solved, time_limit_s - (time.perf_counter() - started), workers, seed)
    stages = validate_stage_map(graph, solved.stages, K)
    if latency and hint is not None and latency_key(graph, hint, K, spec) < latency_key(graph, stages, K, spec):
        stages = tuple(hint)  # the relaxation preferred a plan the device model costs higher: keep the better one
    return _exact_plan(graph, stages, K, spec, objective, alpha, model, first, solved, started)
