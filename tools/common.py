"""Helpers the benchmark scripts share: the one scheduler runner, the repository root, K lists, and where a run came from.

:func:`run_scheduler` is how every benchmark in ``tools/`` runs a scheduler: it times the call (wall clock) and
costs the plan with the device model's own functions, so every tool reports the same figures. Its headline is the
*period* (1000 / throughput): the slowest stage or, where TPUs share one host link (the ``usb`` preset), the bytes all
stages move per request over that link, whichever is longer (:func:`hardware.pipeline_period_ms`).
"""

from __future__ import annotations

import os
import platform
import subprocess
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hardware import EdgeTpuSpec, bottleneck_ms, latency_ms, pipeline_period_ms, stage_costs
from hardware.cost import shared_link_ms
from respect_pass.plan import PlanStats
from respect_pass.schedulers import Scheduler, get_scheduler
from tflite_io import OpGraph

__all__ = ["ROOT", "RunRecord", "run_scheduler", "period_ms", "parse_ks", "machine", "commit"]

ROOT = Path(__file__).resolve().parent.parent


@dataclass(frozen=True)
class RunRecord:
    """One scheduler run on (graph, K, spec): the plan's figures under that spec, in ms, and its wall time."""

    #: the run's label (the scheduler's name, or a benchmark's name for a variant such as ``multiorder@t``)
    scheduler: str
    #: number of pipeline stages (TPUs)
    k: int
    #: the period: ``max(slowest_stage_ms, shared_link_ms)``
    period_ms: float
    #: end-to-end latency of one request through an empty pipeline (sum of the stage times)
    latency_ms: float
    slowest_stage_ms: float
    #: the shared host link's bound on the period (0 for separate links)
    shared_link_ms: float
    #: wall-clock seconds of the scheduler call alone
    solve_seconds: float
    #: whether the scheduler proved its plan optimal (None: it cannot say)
    optimal: bool | None
    lower_bound_ms: float | None
    #: the stage map, one stage per op
    stages: tuple[int, ...]
    stats: PlanStats


def run_scheduler(
    graph: OpGraph, k: int, spec: EdgeTpuSpec, scheduler: str | Scheduler, *, label: str | None = None, **options: Any
) -> RunRecord:
    """Run ``scheduler`` (a registered name or the callable) on ``graph`` at K = ``k`` under ``spec`` with its keyword
    ``options``; time the call and cost its plan with :func:`hardware.stage_costs`. The record is labelled ``label``
    (default: the name given, or the plan's own scheduler name). A scheduler's RespectPassError propagates."""
    run = get_scheduler(scheduler) if isinstance(scheduler, str) else scheduler
    t0 = time.perf_counter()
    plan = run(graph, k, spec, **options)
    seconds = time.perf_counter() - t0
    costs = stage_costs(graph, plan.stages, k, spec)
    return RunRecord(
        scheduler=label or (scheduler if isinstance(scheduler, str) else plan.scheduler),
        k=k,
        period_ms=pipeline_period_ms(costs, spec),
        latency_ms=latency_ms(costs),
        slowest_stage_ms=bottleneck_ms(costs),
        shared_link_ms=shared_link_ms(costs, spec),
        solve_seconds=seconds,
        optimal=plan.optimal,
        lower_bound_ms=plan.lower_bound_ms,
        stages=tuple(plan.stages),
        stats=plan.stats,
    )


def period_ms(graph: OpGraph, stages: Sequence[int], k: int, spec: EdgeTpuSpec) -> float:
    """The period of a given stage map under ``spec`` (as :attr:`RunRecord.period_ms`): to cost a plan made for
    another spec."""
    return pipeline_period_ms(stage_costs(graph, stages, k, spec), spec)


def parse_ks(text: str) -> list[int]:
    """``"2-8"`` -> [2, ..., 8]; ``"2,4,8"`` -> [2, 4, 8]."""
    if "-" in text:
        a, b = text.split("-")
        return list(range(int(a), int(b) + 1))
    return [int(k) for k in text.split(",") if k]


def machine() -> str:
    """CPU, core count and Python version of this machine."""
    return f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}"


def commit() -> str:
    """The checked-out commit, with ``-dirty`` when the tree has uncommitted changes."""
    try:
        head = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"], cwd=ROOT, capture_output=True, text=True, check=False
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return head + ("-dirty" if dirty else "")
