"""Use every TPU: a scheduler's pipeline turned into S <= K segments with replicas.

Every scheduler plans pipelines (one TPU per stage). :func:`with_replicas` gives a plan for K TPUs the
replicas that pay: over the pipeline's own stage-major order and over the model's execution order,
:func:`respect_pass.schedulers.replica_dp.replica_split` chooses cuts and replica counts together (from
the whole model on K TPUs to the K-stage pipeline); each candidate is costed as its written segments are
(:func:`hardware.kernel.map_period_s`, shared link and host included), and the pipeline itself stays a
candidate, so the plan returned is never slower than the best of the pipeline and the whole-model copies.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from dataclasses import replace
from typing import Any

import numpy as np

from hardware import EdgeTpuSpec
from hardware.kernel import CostArrays, cost_arrays, map_period_s, range_costs
from tflite_io import OpGraph, RespectPassError, StageMapError, max_stages

from .orders import split_order
from .plan import REL_TOL, Plan
from .schedulers.replica_dp import replica_split

__all__ = ["MAX_TPUS", "check_tpus", "pipeline_stages", "replicable", "with_replicas", "whole_model_copies"]

log = logging.getLogger(__name__)


#: The most TPUs a plan with replicas is made for: the replica search is O(n^2 K^2) in time and keeps K
#: range matrices, and no Coral host carries more (Coral's PCIe cards hold 2-8; CodeProject.AI's table stops at 8).
MAX_TPUS = 64


def check_tpus(tpus: int) -> None:
    """Refuse a number of TPUs outside 1..:data:`MAX_TPUS` with one line."""
    if not 1 <= tpus <= MAX_TPUS:
        raise RespectPassError(f"number of TPUs must be between 1 and {MAX_TPUS}, got {tpus}")


def replicable(scheduler: str, options: Mapping[str, Any] | None = None, refine_rounds: int = 0) -> bool:
    """Whether replicas apply: not to the compiler's split (the baseline users have), the memory objective,
    nor a plan refined on the device (its measurements are of pipelines)."""
    objective = (options or {}).get("objective", "latency")
    return scheduler != "compiler" and objective == "latency" and not refine_rounds


def pipeline_stages(graph: OpGraph, tpus: int) -> int:
    """The stages of the pipeline to plan first for ``tpus`` TPUs: as many as the TPUs and the graph allow."""
    return min(tpus, max_stages(graph))


def _stage_major(plan: Plan) -> list[int]:
    """The ops of ``plan`` stage by stage, each stage's in execution order."""
    return sorted(range(len(plan.stages)), key=lambda v: (plan.stages[v], v))


def _key(ca: CostArrays, stages: tuple[int, ...], num: int, reps: tuple[int, ...] | None) -> tuple[float, float]:
    return map_period_s(ca, np.asarray(stages), num, reps)


def _better(a: tuple[float, float, int], b: tuple[float, float, int]) -> bool:
    """(period, latency, segments): lower period beyond :data:`REL_TOL`, then lower latency, then fewer segments."""
    if a[0] < b[0] * (1 - REL_TOL):
        return True
    if a[0] > b[0] * (1 + REL_TOL):
        return False
    if a[1] < b[1] * (1 - REL_TOL):
        return True
    return a[1] <= b[1] * (1 + REL_TOL) and a[2] < b[2]


def whole_model_copies(ca: CostArrays, tpus: int) -> tuple[float, float]:
    """(period, latency) in s of the whole model on every TPU (one copy per TPU); ``ca``: the graph's
    :func:`~hardware.kernel.cost_arrays` under the spec."""
    return _key(ca, (0,) * ca.n, 1, (tpus,))


def with_replicas(graph: OpGraph, plan: Plan, tpus: int, spec: EdgeTpuSpec) -> Plan:
    """``plan`` (a pipeline) for ``tpus`` TPUs with the segments and replicas that give the least period
    (see the module docstring). The result keeps the scheduler's name and stats, adds ``replicas`` and
    ``pipeline_bottleneck_ms``; a scheduler's proof (``optimal``, ``lower_bound_ms``) covers pipelines only,
    so it is dropped where replicas change the plan (``optimal_over: pipelines`` in the stats)."""
    t0 = time.perf_counter()
    ca = cost_arrays(graph, spec)
    own = _key(ca, plan.stages, plan.num_stages, None)
    best: tuple[tuple[float, float, int], tuple[int, ...], int, tuple[int, ...]] = (
        (*own, plan.num_stages),
        plan.stages,
        plan.num_stages,
        (1,) * plan.num_stages,
    )
    orders = [_stage_major(plan), list(range(graph.num_ops))]
    for order in orders[: 1 if orders[0] == orders[1] else 2]:
        try:
            found = replica_split(range_costs(ca, order), tpus, spec, ca.host_s)
        except StageMapError:
            continue
        num = len(found.replicas)
        stages = tuple(split_order(order, list(found.cuts), graph.num_ops))
        key = (*_key(ca, stages, num, found.replicas), num)
        if _better(key, best[0]):
            best = (key, stages, num, found.replicas)
    (period, latency, _), stages, num, reps = best
    stats = plan.stats.with_(
        pipeline_bottleneck_ms=own[0] * 1e3,
        replicas=",".join(map(str, reps)),
        replica_seconds=time.perf_counter() - t0,
    )
    if stages == plan.stages and num == plan.num_stages:
        return replace(plan, replicas=reps, tpus=tpus, stats=stats)
    log.info("%d TPUs: %d segments with replicas %s (period %.3f ms)", tpus, num, reps, period * 1e3)
    stats = stats.with_(bottleneck_ms=period * 1e3, latency_ms=latency * 1e3, optimal_over="pipelines")
    return replace(
        plan, stages=stages, num_stages=num, replicas=reps, tpus=tpus, stats=stats, optimal=None, lower_bound_ms=None
    )
