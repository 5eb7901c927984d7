"""The ``exact`` scheduler: CP-SAT (OR-Tools) over all monotone stage maps, proving optimality.

Downset encoding (DESIGN.md): Booleans ``y[v][k] = [stage(v) <= k]`` for k < K-1
(``y[v][K-1] = 1``), ``y[v][k] <= y[v][k+1]``, ``y[u][k] >= y[v][k]`` per edge u->v,
membership ``x[v][k] = y[v][k] - y[v][k-1]``; every stage non-empty, model-output
producers in the last stage, every model input read in stage 0. ``y`` is a constant
where :func:`stage_ranges` fixes it. Stage times follow :func:`hardware.stage_cost`
term by term: compute (+ ``t_op``) per op, ``t_invoke``, streamed ``max(0, P_k - cache)``
with ``P_k`` counting a constant buffer once per stage (``z[b][k] >= x[v][k]`` per
reader v), and the bytes of distinct tensors entering (``in[t][k] >= x[c][k] +
y[u][k-1] - 1``, reader c, producer u; model inputs always enter stage 0 and enter
k > 0 iff read there) and leaving (``out[t][k] >= x[u][k] - y[c][k]``; the last
stage's outputs are the model outputs). Indicators have lower bounds only: they can
only raise a stage's time, so at an optimum they are exact.

Integers: one time unit is ``1 / (io_bytes_per_s * M)`` s, M the largest power of two
<= 2**20 keeping every sum of stage times below 2**53, so activation bytes (and
streamed bytes when both bandwidths are equal, as in the presets) cost exactly M
units each; per-op compute and ``t_invoke`` are rounded to the unit (2.1 fs on USB,
relative error < 1e-8 per stage). Latency: minimum bottleneck B*, then minimum sum
of stage times with ``B <= B* (1 + 1e-9)`` (the tolerance of :mod:`respect_pass.oracle`).
Memory: ``p * P_max + q * crossings`` with ``alpha = p / q`` exactly when that stays
below 2**53 (every dyadic alpha like the default 2**-20), else q the largest power of
two <= 2**40 that does and ``p = round(alpha * q)``.

Solving (:func:`_optimise`): each objective runs with CP-SAT's presolve for half its
time, then without it (memory: only without), warm-started from the best map so far
with a complete hint.
"""
from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from fractions import Fraction

from ortools.sat.python import cp_model

from tflite_io import OpGraph, RespectPassError, StageMapError, segment_interfaces, validate_stage_map
from tflite_io.graph import distinct_constants

from hardware import USB, EdgeTpuSpec, op_class, stage_costs

from ..objectives import DEFAULT_ALPHA, check_objective, crossing_count, memory_objective
from ..plan import Plan

__all__ = ["exact_schedule", "default_hint", "stage_ranges"]

log = logging.getLogger(__name__)

_MAX_UNITS = 2**53
_MAX_M = 2**20
_TIE_REL = 1e-9


def default_hint(graph: OpGraph, num_stages: int, spec: EdgeTpuSpec, objective: str = "latency",
                 alpha: float = DEFAULT_ALPHA) -> tuple[int, ...] | None:
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


def stage_ranges(graph: OpGraph, num_stages: int) -> tuple[list[int], list[int]]:
    """Per op, the lowest and highest stage of any valid map (lo > hi for some op: no valid map).

    Model-output producers and their descendants sit in the last stage, the only reader of a
    model input and its ancestors in stage 0. Op v in stage k needs k ops for stages 0..k-1 that
    are neither its descendants nor pinned last, and K-1-k for the stages after it that are not
    its ancestors. Bounds then propagate along edges.
    """
    n, last = graph.num_ops, num_stages - 1
    desc, anc = [0] * n, [0] * n
    for v in reversed(range(n)):
        for w in graph.succs[v]:
            desc[v] |= desc[w] | (1 << w)
    for v in range(n):
        for u in graph.preds[v]:
            anc[v] |= anc[u] | (1 << u)
    pinned, first, full = 0, 0, (1 << n) - 1
    for v in graph.output_ops:
        pinned |= (1 << v) | desc[v]
    for readers in (graph.consumers.get(t, ()) for t in graph.inputs):
        if len(readers) == 1:
            first |= (1 << readers[0]) | anc[readers[0]]
    lo, hi = [0] * n, [last] * n
    for v in range(n):
        bit = 1 << v
        hi[v] = min(0 if first & bit else last, (full & ~desc[v] & ~bit & ~pinned).bit_count())
        lo[v] = max(last if pinned & bit else 0, last - (full & ~anc[v] & ~bit & ~first).bit_count())
    for v in range(n):
        lo[v] = max([lo[v]] + [lo[u] for u in graph.preds[v]])
    for v in reversed(range(n)):
        hi[v] = min([hi[v]] + [hi[w] for w in graph.succs[v]])
    return lo, hi


class _Model:
    """The CP-SAT model of one (graph, K): y, indicators and objectives. Every variable is
    recorded in ``defs`` with its value as a function of a stage map, for complete hints."""

    def __init__(self, graph: OpGraph, num_stages: int, spec: EdgeTpuSpec, objective: str, alpha: float) -> None:
        g, K, n = graph, num_stages, graph.num_ops
        self.graph, self.K, self.spec = g, K, spec
        m = self.m = cp_model.CpModel()
        self.defs: list[tuple[cp_model.IntVar, Callable[[Sequence[int]], int]]] = []
        self.lo, self.hi = lo, hi = stage_ranges(g, K)
        if any(a > b for a, b in zip(lo, hi)):
            m.add(0 >= 1)  # some op has no possible stage: infeasible
        self.y: list[list] = [[int(k >= hi[v]) if k < lo[v] or k >= hi[v] else m.new_bool_var(f"y{v}_{k}")
                               for k in range(K - 1)] + [1] for v in range(n)]
        for v, k in ((v, k) for v in range(n) for k in range(K - 1) if not isinstance(self.y[v][k], int)):
            self.defs.append((self.y[v][k], lambda s, v=v, k=k: int(s[v] <= k)))
            if not isinstance(self.y[v][k + 1], int):
                m.add(self.y[v][k] <= self.y[v][k + 1])
        for e, k in ((e, k) for e in g.edges for k in range(K - 1)):
            if not (isinstance(self.y[e.src][k], int) and isinstance(self.y[e.dst][k], int)):
                m.add(self.y[e.src][k] >= self.y[e.dst][k])
        for k in range(K):
            m.add(sum(self.x(v, k) for v in range(n)) >= 1)
        for t in g.inputs:
            m.add(sum(self.x(r, 0) for r in g.consumers.get(t, ())) >= 1)
        self.buffers: dict[int, tuple[int, list[int]]] = {}  # buffer -> (bytes, reader ops)
        for op in g.ops:
            for b, info in distinct_constants(g.tensors, op.inputs).items():
                self.buffers.setdefault(b, (info.nbytes, []))[1].append(op.index)
        self.total_params = sum(nbytes for nbytes, _ in self.buffers.values())
        if objective == "memory" or self.total_params > spec.cache_bytes:
            self.params = [self._params(k) for k in range(K)]
        if objective == "memory":
            self._memory(alpha)
        else:
            self._latency()

    def x(self, v: int, k: int):
        """Stage membership [stage(v) == k] as a linear expression of y."""
        return self.y[v][k] - (self.y[v][k - 1] if k else 0)

    def _indicator(self, name: str, lower: list, value: Callable[[Sequence[int]], int]):
        """A Boolean >= every expression of ``lower`` (0 when none can be positive); ``value`` defines it."""
        lower = [e for e in lower if not isinstance(e, int) or e > 0]
        if not lower:
            return 0
        w = self.m.new_bool_var(name)
        for e in lower:
            self.m.add(w >= e)
        self.defs.append((w, value))
        return w

    def _params(self, k: int):
        """P_k: bytes of distinct constant buffers read by stage k (an indicator per shared buffer)."""
        terms = []
        for b, (nbytes, readers) in self.buffers.items():
            if len(readers) == 1:
                terms.append(nbytes * self.x(readers[0], k))
            else:
                terms.append(nbytes * self._indicator(f"z{b}_{k}", [self.x(v, k) for v in readers],
                                                      lambda s, rs=readers, k=k: int(any(s[v] == k for v in rs))))
        return sum(terms)

    def _latency(self) -> None:
        g, K, spec, m, total_params = self.graph, self.K, self.spec, self.m, self.total_params
        act = sum(g.tensors[t].nbytes for t in g.activation_tensors | set(g.outputs))
        upper_s = (K * spec.t_invoke_s + g.num_ops * spec.t_op_s
                   + sum(self._compute_s(v) for v in range(g.num_ops))
                   + K * total_params / spec.stream_bytes_per_s + 2 * K * act / spec.io_bytes_per_s)
        mult = _MAX_M
        while mult > 1 and upper_s * spec.io_bytes_per_s * mult > _MAX_UNITS:
            mult //= 2
        self.unit_s, self.io_c = 1.0 / (spec.io_bytes_per_s * mult), mult
        self.stream_c = round(mult * spec.io_bytes_per_s / spec.stream_bytes_per_s)
        self.invoke = round(spec.t_invoke_s / self.unit_s)
        self.op_c = [round((self._compute_s(v) + spec.t_op_s) / self.unit_s) for v in range(g.num_ops)]
        bound = round(upper_s / self.unit_s) + 1
        self.times = []
        for k in range(K):
            expr = self.invoke + sum(c * self.x(v, k) for v, c in enumerate(self.op_c)) + self.io_c * self._io_bytes(k)
            if total_params > spec.cache_bytes:  # else nothing ever streams
                excess = m.new_int_var(0, total_params, f"excess{k}")
                m.add(excess >= self.params[k] - spec.cache_bytes)
                self.defs.append((excess, lambda s, k=k: max(0, self._stage_params(s, k) - spec.cache_bytes)))
                expr += self.stream_c * excess
            self.times.append(expr)
        # Redundant bound: the stage of op v costs at least its invoke, compute and own streamed parameters.
        lower = max(self.invoke + self.op_c[v] + self.stream_c * max(0, g.param_bytes_of([v]) - spec.cache_bytes)
                    for v in range(g.num_ops))
        self.bottleneck = m.new_int_var(min(lower, bound), bound, "B")
        self.defs.append((self.bottleneck, lambda s: max(self.scaled_times(s))))
        for expr in self.times:
            m.add(expr <= self.bottleneck)
        self.total = sum(self.times)

    def _compute_s(self, v: int) -> float:
        op = self.graph.ops[v]
        return op.macs / (self.spec.peak_macs_per_s * self.spec.efficiency[op_class(op.op_type)])

    def _stage_params(self, stages: Sequence[int], k: int) -> int:
        return self.graph.param_bytes_of(v for v, s in enumerate(stages) if s == k)

    def _io_bytes(self, k: int):
        """In_k + Out_k in bytes, as a linear expression of indicators (constants for the model's I/O)."""
        g, K, y, x, inputs = self.graph, self.K, self.y, self.x, set(self.graph.inputs)
        terms = [sum(g.tensors[t].nbytes for t in g.inputs) if k == 0 else 0,
                 sum(g.tensors[t].nbytes for t in g.outputs) if k == K - 1 else 0]
        for t, rs in g.consumers.items():
            nbytes, u = g.tensors[t].nbytes, g.producer.get(t)
            if t in inputs:  # always enters stage 0 (a pipeline rule); enters k > 0 iff read there
                if k > 0:
                    terms.append(nbytes * self._indicator(f"in{t}_{k}", [x(c, k) for c in rs],
                                                          lambda s, rs=rs, k=k: int(any(s[c] == k for c in rs))))
                continue
            if u is None:
                continue
            if k > 0:
                terms.append(nbytes * self._indicator(
                    f"in{t}_{k}", [x(c, k) + y[u][k - 1] - 1 for c in rs],
                    lambda s, u=u, rs=rs, k=k: int(s[u] < k and any(s[c] == k for c in rs))))
            if k < K - 1:
                terms.append(nbytes * self._indicator(
                    f"out{t}_{k}", [x(u, k) - y[c][k] for c in rs],
                    lambda s, u=u, rs=rs, k=k: int(s[u] == k and any(s[c] > k for c in rs))))
        return sum(terms)

    def _memory(self, alpha: float) -> None:
        g, K, m, y = self.graph, self.K, self.m, self.y
        total = self.total_params
        most = (K - 1) * len(g.consumers)  # crossings
        frac = Fraction(alpha)
        if frac.numerator * total + frac.denominator * most > _MAX_UNITS:
            q = 2**40
            while q > 1 and alpha * q * total + q * most > _MAX_UNITS:
                q //= 2
            frac = Fraction(round(alpha * q), q)
        self.alpha_pq = (frac.numerator, frac.denominator)
        # Redundant bounds: some stage holds at least 1/K of the parameters, and every op's own.
        lower = max([-(-total // K)] + [g.param_bytes_of([v]) for v in range(g.num_ops)])
        pmax = m.new_int_var(min(lower, total), total, "Pmax")
        for p in self.params:
            m.add(pmax >= p)
        self.defs.append((pmax, lambda s: max(self._stage_params(s, k) for k in range(K))))
        crossings: list[list] = [[] for _ in range(K - 1)]
        for t, rs in ((t, rs) for t, rs in g.consumers.items() if t in g.producer):
            u = g.producer[t]
            for k in range(K - 1):
                crossings[k].append(self._indicator(f"cross{t}_{k}", [y[u][k] - y[r][k] for r in rs],
                                                    lambda s, u=u, rs=rs, k=k: int(s[u] <= k < max(s[r] for r in rs))))
        if all(self.hi[v] == 0 for v in range(g.num_ops) if not g.preds[v]):
            # Redundant: with every source op in stage 0, a path into stage k+1 crosses cut k.
            for cut in crossings:
                m.add(sum(cut) >= 1)
        self.memory = frac.numerator * pmax + frac.denominator * sum(sum(cut) for cut in crossings)

    def hint(self, stages: Sequence[int]) -> None:
        """Hint every variable with its value under a valid stage map."""
        self.m.clear_hints()
        for var, value in self.defs:
            self.m.add_hint(var, value(stages))

    def stages(self, solver: cp_model.CpSolver) -> tuple[int, ...]:
        """The stage map of the solver's solution: stage(v) = first k with y[v][k] = 1."""
        def one(y) -> bool:
            return bool(y) if isinstance(y, int) else solver.boolean_value(y)
        return tuple(next(k for k in range(self.K) if one(self.y[v][k])) for v in range(self.graph.num_ops))

    def scaled_times(self, stages: Sequence[int]) -> list[int]:
        """Integer stage times of a valid map, term by term as the encoding counts them at an optimum."""
        g = self.graph
        return [self.invoke + sum(self.op_c[v] for v in seg.ops)
                + self.io_c * sum(g.tensors[x].nbytes for x in seg.inputs + seg.outputs)
                + self.stream_c * max(0, seg.param_bytes - self.spec.cache_bytes)
                for seg in segment_interfaces(g, stages, self.K)]

    def minimize(self, kind: str) -> None:
        """Set the objective: ``bottleneck``, ``total`` (latency) or ``memory``."""
        self.kind = kind
        self.m.minimize(getattr(self, kind))

    def value(self, stages: Sequence[int]) -> int:
        """The exact integer value of the current objective on a valid map."""
        if self.kind != "memory":
            return (max if self.kind == "bottleneck" else sum)(self.scaled_times(stages))
        p, q = self.alpha_pq
        pmax = max(self._stage_params(stages, k) for k in range(self.K))
        return p * pmax + q * crossing_count(self.graph, stages, self.K)


def _solve(model: _Model, limit: float, workers: int, seed: int, presolve: bool) -> tuple[cp_model.CpSolver, int]:
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
    return solver, status


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


def _optimise(model: _Model, limit: float, workers: int, seed: int, presolve_share: float,
              start: Sequence[int] | None) -> _Outcome:
    """Minimise the objective in ``limit`` s: with presolve for ``presolve_share`` of it, then without,
    warm-started from the best map so far. Presolve makes most real models fast, but on some (NAS-like
    cells) it hides the indicator rows from the LP and the bound stalls. A presolved run whose bound
    beats a known map, or that says infeasible, is not trusted (google/or-tools#5293, #5274)."""
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
        if out.value is not None and bound > out.value + 0.5 + 1e-9 * abs(bound):
            log.warning("exact: CP-SAT's bound %.0f exceeds a known map's value %d (solver presolve bug); "
                        "bound ignored", bound, out.value)
            continue
        if math.isfinite(bound):
            out.bound = max(out.bound, bound)
        if status == cp_model.OPTIMAL or (out.value is not None and out.bound >= out.value):
            out.optimal = True
            break
    return out


def exact_schedule(graph: OpGraph, num_stages: int, cost: EdgeTpuSpec | None = None, *, objective: str = "latency",
                   alpha: float = DEFAULT_ALPHA, time_limit_s: float = 30.0, workers: int = 2,
                   hint: Sequence[int] | None = None, seed: int = 0) -> Plan:
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
    t0 = time.perf_counter()
    check_objective(objective)
    spec = cost if isinstance(cost, EdgeTpuSpec) else USB
    n, K = graph.num_ops, num_stages
    if not 1 <= K <= max(n, 1):
        raise StageMapError(f"number of segments must be between 1 and the {n} ops of the model, got {K}", K)
    hint = validate_stage_map(graph, hint, K) if hint is not None else default_hint(graph, K, spec, objective, alpha)
    model = _Model(graph, K, spec, objective, alpha)
    latency = objective == "latency"
    model.minimize("bottleneck" if latency else "memory")
    # Presolve hides the memory model's crossing rows from the LP (its bound collapses to alpha * P_max).
    first = _optimise(model, time_limit_s * (0.8 if latency else 1.0), workers, seed, 0.5 if latency else 0.0, hint)
    if first.infeasible:
        raise StageMapError(f"no valid {K}-stage pipeline exists: every stage must be non-empty, every op "
                            "producing a model output (and every op after it) must be in the last stage, and "
                            "every model input must be read by the first stage; use fewer segments", K)
    if first.stages is None:
        raise StageMapError(f"exact: no valid {K}-stage plan found within {time_limit_s} s and no hint "
                            "to fall back on; raise the time limit", K)
    if not first.found:
        log.warning("exact: no solution within %.3g s; returning the hint plan", time_limit_s)
    stages, branches, wall = first.stages, first.branches, first.wall_s
    stats: list[tuple[str, int | float]] = []
    if latency:  # tie-break: least latency among (near-)minimum bottlenecks
        model.m.add(model.bottleneck <= first.value + math.ceil(first.value * _TIE_REL))
        model.minimize("total")
        second = _optimise(model, time_limit_s - (time.perf_counter() - t0), workers, seed, 0.5, stages)
        stages, branches, wall = second.stages, branches + second.branches, wall + second.wall_s
        stats.append(("latency_optimal", int(second.optimal)))
    stages = validate_stage_map(graph, stages, K)
    stage_ms = tuple(c.ms for c in stage_costs(graph, stages, K, spec))
    lower_bound_ms = None
    if latency:
        if math.isfinite(first.bound):
            lower_bound_ms = min(first.bound * model.unit_s * 1e3, max(stage_ms))
        stats.append(("objective_value", max(stage_ms)))
    else:
        stats.append(("objective_value", memory_objective(graph, stages, K, alpha)))
        if math.isfinite(first.bound):
            stats.append(("objective_bound", first.bound / model.alpha_pq[1]))
    seconds = time.perf_counter() - t0
    stats += [("branches", branches), ("wall_s", wall)]
    log.info("exact: K=%d %s objective, %s in %.2f s, bottleneck %.4f ms", K, objective,
             "optimal" if first.optimal else "not proven optimal", seconds, max(stage_ms))
    return Plan(stages, K, "exact", objective=objective, stage_ms=stage_ms, optimal=first.optimal,
                lower_bound_ms=lower_bound_ms, solve_seconds=seconds, stats=tuple(stats))

