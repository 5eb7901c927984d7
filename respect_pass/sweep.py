"""How many Edge TPUs does a model need? ``respect-pass sweep`` and the idle-stage warning.

:func:`sweep` plans a model for K = 1..N TPUs (no segment files are built or written) and predicts
each plan's pipeline period (the slowest stage or the shared host link,
:func:`hardware.kernel.map_period_s`, the same figure ``partition`` reports as
``predicted_bottleneck_ms``), its latency and throughput, and the same for the ``compiler`` split
(``edgetpu_compiler --num_segments``) at every K. The recommended K is the smallest whose throughput
is within :data:`SAME_PERIOD` (2%) of the best.

:func:`idle_stage` is the check behind the warning of a normal run: a stage busy less than
:data:`IDLE_BELOW` (25%) of the period while K - 1 TPUs give the same period (within 2%).
"""

from __future__ import annotations

import inspect
import logging
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from hardware import USB, EdgeTpuSpec
from hardware.kernel import cost_arrays, map_period_s, map_stage_times
from tflite_io import OpGraph, RespectPassError, TfliteModel, max_stages, validate_stage_map

from .plan import Plan
from .replicas import check_tpus, replicable, whole_model_copies, with_replicas
from .schedulers import get_scheduler

__all__ = [
    "IDLE_BELOW",
    "SAME_PERIOD",
    "IdleStage",
    "SweepResult",
    "SweepRow",
    "format_sweep",
    "idle_stage",
    "recommend",
    "sweep",
]

log = logging.getLogger(__name__)

#: Two periods within this fraction count as the same (and a throughput within it of the best as the best).
SAME_PERIOD = 0.02
#: A stage busy less than this fraction of the period is nearly idle.
IDLE_BELOW = 0.25
#: Schedulers too slow (or not schedulers at all) to run again for the K - 1 check: use this one instead.
_RECHECK_WITH = {"exact": "respect", "respect+exact": "respect", "given": "respect"}


@dataclass(frozen=True)
class SweepRow:
    """One K of a sweep; the plan's figures are None where the scheduler found no plan for this K."""

    k: int
    bottleneck_ms: float | None
    latency_ms: float | None
    throughput_ips: float | None
    speedup_vs_1: float | None
    speedup_vs_compiler: float | None
    compiler_bottleneck_ms: float | None
    idle_stages: tuple[int, ...] = ()
    stage_ms: tuple[float, ...] = ()
    #: the plan's segments and the TPUs of each (replicas); the baselines beside it: the scheduler's
    #: pipeline (one TPU per stage; None where K passes the stages the model allows) and one whole-model
    #: copy per TPU
    segments: int | None = None
    replicas: tuple[int, ...] = ()
    pipeline_bottleneck_ms: float | None = None
    copies_bottleneck_ms: float | None = None

    def as_json(self) -> dict[str, Any]:
        """The row of ``respect-pass sweep --json``."""
        return {
            "k": self.k,
            "segments": self.segments,
            "replicas": list(self.replicas),
            "pipeline_bottleneck_ms": self.pipeline_bottleneck_ms,
            "copies_bottleneck_ms": self.copies_bottleneck_ms,
            "bottleneck_ms": self.bottleneck_ms,
            "latency_ms": self.latency_ms,
            "throughput_ips": self.throughput_ips,
            "speedup_vs_1": self.speedup_vs_1,
            "speedup_vs_compiler": self.speedup_vs_compiler,
            "compiler_bottleneck_ms": self.compiler_bottleneck_ms,
            "idle_stages": list(self.idle_stages),
        }


@dataclass(frozen=True)
class SweepResult:
    """Predicted period, latency and throughput of a model on K = 1..N Edge TPUs."""

    model: str
    spec: str
    scheduler: str
    rows: tuple[SweepRow, ...]
    recommended: int | None
    notes: tuple[str, ...] = field(default=())
    #: the device model's typical error (:attr:`hardware.EdgeTpuSpec.prediction_error`), None where not known
    prediction_error: float | None = None
    error_line: str = ""

    def as_json(self) -> dict[str, Any]:
        """The document ``respect-pass sweep --json`` prints."""
        return {
            "model": self.model,
            "spec": self.spec,
            "scheduler": self.scheduler,
            "rows": [r.as_json() for r in self.rows],
            "recommended": self.recommended,
            "notes": list(self.notes),
            "prediction_error": self.prediction_error,
        }


@dataclass(frozen=True)
class IdleStage:
    """The nearly idle stages of a plan on K TPUs, and the smallest K with the same period (see
    :func:`idle_stage`). ``stage`` / ``stage_ms``: the least busy one; ``stages``: every idle stage."""

    stage: int
    stage_ms: float
    period_ms: float
    fewer_k: int
    fewer_period_ms: float
    fewer_scheduler: str | None = None  # set when the fewer-TPU plans came from another scheduler
    replicas_period_ms: float | None = None  # what replicas give at K, when the plan has none and they pay
    stages: tuple[tuple[int, float], ...] = ()  # every idle stage and its busy time per request, ms
    k: int = 0  # the plan's TPUs

    @property
    def message(self) -> str:
        """One line: which stages idle and how much, the smallest K giving the same period, and what replicas
        would give."""
        idle = self.stages or ((self.stage, self.stage_ms),)
        what = ", ".join(f"{i} ({100 * (1 - ms / self.period_ms):.0f}%, {_ms(ms)} ms)" for i, ms in idle)
        head = (
            f"stage {idle[0][0]} is idle {100 * (1 - idle[0][1] / self.period_ms):.0f}% of the period "
            f"({_ms(idle[0][1])} of {_ms(self.period_ms)} ms)"
            if len(idle) == 1
            else f"stages {what} are idle most of the {_ms(self.period_ms)} ms period"
        )
        same = "a shorter" if self.fewer_period_ms < self.period_ms * (1 - SAME_PERIOD) else "the same"
        by = f", {self.fewer_scheduler} scheduler" if self.fewer_scheduler else ""
        least = ", the fewest TPUs that do" if self.k and self.fewer_k < self.k - 1 else ""
        reps = (
            f"; with replicas (without --no-replicas) K={self.k or self.fewer_k + 1} gives {_ms(self.replicas_period_ms)} ms"
            if self.replicas_period_ms is not None
            else ""
        )
        return f"{head}; K={self.fewer_k} gives {same} period ({_ms(self.fewer_period_ms)} ms{by}{least}){reps}"


def _ms(value: float) -> str:
    """Three significant digits, never in exponent form."""
    digits = 2 - math.floor(math.log10(abs(value))) if value else 2
    return f"{value:.{max(0, digits)}f}"


def _ranges(values: Sequence[int]) -> str:
    """``[2, 3, 4, 7]`` -> ``'2..4, 7'``."""
    runs: list[list[int]] = []
    for v in values:
        if runs and runs[-1][1] == v - 1:
            runs[-1][1] = v
        else:
            runs.append([v, v])
    return ", ".join(str(a) if a == b else f"{a}..{b}" for a, b in runs)


def _graph(model: str | Path | TfliteModel | OpGraph, fix_batch: bool, host_time: str) -> tuple[OpGraph, str]:
    if isinstance(model, OpGraph):
        return model, model.name
    if not isinstance(model, TfliteModel):
        from .partition import load_model

        model = load_model(model, fix_batch, host_time)
    return model.graph, str(model.path.resolve())


def _period(graph: OpGraph, plan: Plan, spec: EdgeTpuSpec) -> tuple[float, float, np.ndarray]:
    """(period ms, latency ms, stage ms) of ``plan`` with its replicas, shared host link and host included."""
    stages = np.asarray(validate_stage_map(graph, plan.stages, plan.num_stages), dtype=np.int64)
    ca = cost_arrays(graph, spec)
    period_s, latency_s = map_period_s(ca, stages, plan.num_stages, plan.stage_replicas)
    return period_s * 1e3, latency_s * 1e3, map_stage_times(ca, stages, plan.num_stages) * 1e3


def _plan(
    graph: OpGraph, k: int, spec: EdgeTpuSpec, scheduler: str, options: Mapping[str, Any]
) -> tuple[Plan | None, str | None]:
    """The scheduler's plan, or None and the reason when it has none for this K."""
    try:
        return get_scheduler(scheduler)(graph, k, spec, **options), None
    except RespectPassError as exc:
        return None, str(exc)


def recommend(rows: Sequence[SweepRow]) -> int | None:
    """The smallest K whose throughput is within :data:`SAME_PERIOD` of the best (None without plans)."""
    planned = [(r.k, r.throughput_ips) for r in rows if r.throughput_ips is not None]
    if not planned:
        return None
    best = max(ips for _, ips in planned)
    return min(k for k, ips in planned if ips >= best * (1 - SAME_PERIOD))


def sweep(
    model: str | Path | TfliteModel | OpGraph,
    max_tpus: int,
    spec: EdgeTpuSpec = USB,
    scheduler: str = "respect",
    fix_batch: bool = False,
    scheduler_options: Mapping[str, Any] | None = None,
    replicas: bool = True,
    host_time: str = "measured",
) -> SweepResult:
    """Plan ``model`` for K = 1..``max_tpus`` Edge TPUs with ``scheduler`` (segments with replicas, unless
    ``replicas`` is False) beside three baselines: the scheduler's pipeline (one TPU per stage), one
    whole-model copy per TPU, and the compiler's split.

    Without replicas, ``max_tpus`` beyond the largest K the model allows (:func:`tflite_io.max_stages`) is
    capped, and a note says so; with them, pipelines stop there and the replicas go on. Nothing is
    written. Raises :class:`RespectPassError` for a bad model or ``max_tpus`` < 1.
    """
    if max_tpus < 1:
        raise RespectPassError(f"the number of TPUs to sweep must be at least 1, got {max_tpus}")
    get_scheduler(scheduler)  # an unknown name fails before the model is read
    from .partition import planning_spec

    spec = planning_spec(spec)
    graph, name = _graph(model, fix_batch, host_time)
    options = dict(scheduler_options or {})
    replicate = replicas and replicable(scheduler, options)
    if replicate:
        check_tpus(max_tpus)
    max_tpus, cap_notes = _capped_tpus(graph, max_tpus, replicate)
    planned = _plan_every_k(graph, max_tpus, spec, scheduler, options, replicate)
    notes = cap_notes + _failure_notes(planned.failed)
    rows = _rows(planned)
    return SweepResult(
        name, spec.name, scheduler, tuple(rows), recommend(rows), tuple(notes), spec.prediction_error, spec.error_line()
    )


def _capped_tpus(graph: OpGraph, max_tpus: int, replicas: bool) -> tuple[int, list[str]]:
    """``max_tpus`` capped at the largest K the model allows as a pipeline (not with replicas), and the note."""
    largest = max_stages(graph)
    if max_tpus <= largest:
        return max_tpus, []
    reason = (
        "one op per TPU"
        if largest == graph.num_ops
        else f"of its {graph.num_ops} ops, those tied to the first or last stage share a TPU"
    )
    if replicas:
        return max_tpus, [f"pipelines stop at {largest} stages ({reason}); more TPUs run replicas"]
    return largest, [f"the model allows at most {largest} TPUs ({reason}); swept K = 1..{largest}"]


@dataclass(frozen=True)
class _Planned:
    """Per K = 1.. (None: no plan): our plan (with replicas, when they apply) and its (period ms, latency ms,
    stage ms); the pipeline's, the whole-model copies' and the compiler's periods (ms); each scheduler's
    failures as (K, reason)."""

    plans: tuple[Plan | None, ...]
    ours: tuple[tuple[float, float, np.ndarray] | None, ...]
    pipelines: tuple[float | None, ...]
    copies: tuple[float, ...]
    theirs: tuple[float | None, ...]
    failed: dict[str, list[tuple[int, str]]]


def _plan_every_k(
    graph: OpGraph, max_tpus: int, spec: EdgeTpuSpec, scheduler: str, options: Mapping[str, Any], replicas: bool
) -> _Planned:
    """Plan K = 1..``max_tpus`` with ``scheduler`` (and replicas) and with the compiler's split; predict each."""
    plans: list[Plan | None] = []
    ours: list[tuple[float, float, np.ndarray] | None] = []
    pipelines: list[float | None] = []
    theirs: list[float | None] = []
    failed: dict[str, list[tuple[int, str]]] = {scheduler: [], "compiler": []}
    largest = max_stages(graph)
    for k in range(1, max_tpus + 1):
        plan, why = _plan(graph, min(k, largest), spec, scheduler, options)
        pipelines.append(_period(graph, plan, spec)[0] if plan is not None and k <= largest else None)
        if plan is None and replicas and k > largest:  # no pipeline to start from: the whole model's order
            plan = Plan((0,) * graph.num_ops, 1, scheduler)
        if plan is None:
            failed[scheduler].append((k, str(why)))
        elif replicas:
            plan = with_replicas(graph, plan, k, spec)
        plans.append(plan)
        ours.append(_period(graph, plan, spec) if plan is not None else None)
        base, why = (None, None) if k > largest else _plan(graph, k, spec, "compiler", {})
        if base is None and why is not None:
            failed["compiler"].append((k, str(why)))
        theirs.append(_period(graph, base, spec)[0] if base is not None else None)
        log.info("K=%d: period %s ms, compiler %s ms", k, ours[-1] and ours[-1][0], theirs[-1])
    ca = cost_arrays(graph, spec)
    copies = tuple(whole_model_copies(ca, k)[0] * 1e3 for k in range(1, max_tpus + 1))
    return _Planned(tuple(plans), tuple(ours), tuple(pipelines), copies, tuple(theirs), failed)


def _failure_notes(failed: Mapping[str, list[tuple[int, str]]]) -> list[str]:
    """One note per scheduler that found no plan for some K: those K and the first reason."""
    return [
        f"the {who} scheduler found no plan for K = {_ranges([k for k, _ in misses])} (K={misses[0][0]}: {misses[0][1]})"
        for who, misses in failed.items()
        if misses
    ]


def _rows(planned: _Planned) -> list[SweepRow]:
    """One row per K: our plan's figures against one TPU, the baselines and the compiler's split."""
    one = planned.ours[0][0] if planned.ours[0] is not None else None
    rows = []
    for k, (plan, mine, compiler_ms) in enumerate(zip(planned.plans, planned.ours, planned.theirs), start=1):
        pipeline_ms, copies_ms = planned.pipelines[k - 1], planned.copies[k - 1]
        if plan is None or mine is None:
            rows.append(SweepRow(k, None, None, None, None, None, compiler_ms, copies_bottleneck_ms=copies_ms))
            continue
        period, latency, times = mine
        busy = times / np.asarray(plan.stage_replicas)
        rows.append(
            SweepRow(
                k=k,
                bottleneck_ms=period,
                latency_ms=latency,
                throughput_ips=1e3 / period,
                speedup_vs_1=one / period if one is not None else None,
                speedup_vs_compiler=compiler_ms / period if compiler_ms is not None else None,
                compiler_bottleneck_ms=compiler_ms,
                idle_stages=tuple(int(i) for i in np.flatnonzero(busy < IDLE_BELOW * period)) if plan.num_stages > 1 else (),
                stage_ms=tuple(float(t) for t in times),
                segments=plan.num_stages,
                replicas=plan.stage_replicas,
                pipeline_bottleneck_ms=pipeline_ms,
                copies_bottleneck_ms=copies_ms,
            )
        )
    return rows


def format_sweep(result: SweepResult) -> str:
    """The table ``respect-pass sweep`` prints."""

    def cell(value: float | None, fmt: str) -> str:
        return "-" if value is None else format(value, fmt)

    lines = [
        f"sweep of {Path(result.model).name}: {result.scheduler} scheduler vs the compiler's split, "
        f"{result.spec} spec (predicted)",
        f"{'K':>3}  {'TPUs/seg':>8}  {'period ms':>9}  {'latency ms':>10}  {'inf/s':>8}  {'vs 1 TPU':>8}  "
        f"{'vs compiler':>11}  {'pipeline ms':>11}  {'copies ms':>9}  {'compiler ms':>11}  idle stages",
    ]
    for r in result.rows:
        idle = ",".join(map(str, r.idle_stages)) or "-"
        mark = "  <- recommended" if r.k == result.recommended else ""
        lines.append(
            f"{r.k:>3}  {','.join(map(str, r.replicas)) or '-':>8}  {cell(r.bottleneck_ms, '9.3f')}  "
            f"{cell(r.latency_ms, '10.3f')}  {cell(r.throughput_ips, '8.1f')}  {cell(r.speedup_vs_1, '7.2f')}x  "
            f"{cell(r.speedup_vs_compiler, '10.2f')}x  {cell(r.pipeline_bottleneck_ms, '11.3f')}  "
            f"{cell(r.copies_bottleneck_ms, '9.3f')}  {cell(r.compiler_bottleneck_ms, '11.3f')}  "
            f"{idle:<11}{mark}".rstrip()
        )
    if result.recommended is not None:
        ips, k = max((r.throughput_ips, -r.k) for r in result.rows if r.throughput_ips is not None)
        lines.append(
            f"recommended: K={result.recommended} (the smallest K within {SAME_PERIOD:.0%} of the best "
            f"throughput, {ips:.1f} inferences/s at K={-k})"
        )
    lines.append(
        "TPUs/seg: the TPUs running each segment (replicas); pipeline: one TPU per stage; copies: the whole "
        "model on every TPU"
    )
    lines.append(f"idle stages: busy less than {IDLE_BELOW:.0%} of the period")
    if result.error_line:
        lines.append(result.error_line)
    lines.extend(f"note: {n}" for n in result.notes)
    return "\n".join(lines)


def idle_stage(
    graph: OpGraph,
    plan: Plan,
    spec: EdgeTpuSpec,
    scheduler_options: Mapping[str, Any] | None = None,
    replicas: bool = False,
) -> IdleStage | None:
    """The least busy stage of ``plan`` (which must carry ``stage_ms``) if it is busy less than
    :data:`IDLE_BELOW` of the period (a stage of r replicas: its time over r) and a plan for K - 1 TPUs
    has the same period (within :data:`SAME_PERIOD`) or a shorter one; None otherwise. With ``replicas``
    (the plan was made with them) the K - 1 plan gets replicas too; without (a pipeline, ``--no-replicas``)
    the check also says what replicas would give at K.

    The K - 1 plan is costed like ``plan``'s. ``exact`` and ``respect+exact`` (which may run for their
    whole time limit again) and ``given`` are replaced by ``respect`` for that plan.
    """
    k, period, times = plan.num_stages, plan.predicted_bottleneck_ms, plan.stage_ms
    if k < 2 or period is None or times is None or period <= 0:
        return None
    busy = [t / r for t, r in zip(times, plan.stage_replicas)]
    idle = tuple((i, busy[i]) for i in range(k) if busy[i] < IDLE_BELOW * period)
    if not idle:
        return None
    stage = min(range(k), key=lambda i: busy[i])
    name = _RECHECK_WITH.get(plan.scheduler, plan.scheduler)
    accepted = inspect.signature(get_scheduler(name)).parameters
    options = {key: v for key, v in (scheduler_options or {}).items() if key in accepted and key != "stages"}
    tpus = plan.num_tpus
    fewest: tuple[int, float] | None = None
    for fewer_k in range(tpus - 1, 0, -1):  # down from K - 1 while the period holds: the smallest such K
        fewer_ms = _fewer_period(graph, fewer_k, spec, name, options, replicas)
        if fewer_ms is None or fewer_ms > period * (1 + SAME_PERIOD):
            break
        fewest = (fewer_k, fewer_ms)
    if fewest is None:
        return None
    with_reps = None if replicas else _period(graph, with_replicas(graph, plan, tpus, spec), spec)[0]
    return IdleStage(
        stage,
        times[stage],
        period,
        fewest[0],
        fewest[1],
        name if name != plan.scheduler else None,
        with_reps if with_reps is not None and with_reps < period * (1 - SAME_PERIOD) else None,
        idle,
        tpus,
    )


def _fewer_period(
    graph: OpGraph, k: int, spec: EdgeTpuSpec, scheduler: str, options: Mapping[str, Any], replicas: bool
) -> float | None:
    """The period of ``scheduler``'s plan for ``k`` TPUs (with replicas when ``replicas``), None without one."""
    fewer, _ = _plan(graph, min(k, max_stages(graph)), spec, scheduler, options)
    if fewer is None:
        return None
    return _period(graph, with_replicas(graph, fewer, k, spec) if replicas else fewer, spec)[0]
