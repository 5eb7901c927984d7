"""``--refine-on-device N``: schedule, measure the plan's segments on the device, refit, reschedule.

libcoral's profiling partitioner compiles and benchmarks dozens of candidate
segments to find a balanced split. Here each round measures only the plan at
hand (one pipeline run: every segment alone and the pipeline's period), adds
its K segments to the samples the device model is fitted to (the six linear
constants, pulled towards the starting spec so K samples cannot over-fit; a
period above every stage reveals a shared host link), and reschedules with the
refitted model. It stops after N rounds, when the schedule no longer changes,
or when the measured period stops improving; the plan with the best measured
period wins.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from hardware import EdgeTpuSpec
from hardware.calibrate import Device, graph_of
from hardware.cost import stage_costs
from hardware.fit import Sample, fit_linear
from hardware.kernel import cost_arrays, map_period_s
from hardware.terms import shared_link_rate
from tflite_io import RespectPassError
from tflite_io.reader import TfliteModel
from tflite_io.writer import build_segments

from .plan import Plan
from .schedulers import get_scheduler

__all__ = ["Refinement", "refine_on_device", "PRIOR_WEIGHT", "MIN_GAIN"]

log = logging.getLogger(__name__)

#: Relative-ridge weight pulling a refit towards the starting spec (hardware.fit.fit_linear).
PRIOR_WEIGHT = 0.05
#: A round must lower the measured period by this share to go on.
MIN_GAIN = 0.005
#: A period this much above every stage's own time is taken as a shared host link.
SHARED_MARGIN = 1.03


@dataclass(frozen=True)
class Refinement:
    """The plan with the best measured period, the spec fitted last, and one record per round."""

    plan: Plan
    spec: EdgeTpuSpec
    rounds: tuple[dict[str, Any], ...]
    device_runs: int


def _period_ms(model: TfliteModel, stages: tuple[int, ...], k: int, spec: EdgeTpuSpec) -> float:
    return map_period_s(cost_arrays(model.graph, spec), np.asarray(stages), k)[0] * 1e3


def refine_on_device(
    model: TfliteModel,
    num_segments: int,
    spec: EdgeTpuSpec,
    device: Device,
    rounds: int,
    scheduler: str = "respect",
    options: Mapping[str, Any] | None = None,
) -> Refinement:
    """At most ``rounds`` rounds of schedule -> measure -> refit (see the module docstring)."""
    if rounds < 1:
        raise RespectPassError(f"--refine-on-device needs at least 1 round, got {rounds}")
    schedule = get_scheduler(scheduler)
    start_runs = device.runs
    samples: list[Sample] = []
    current = spec
    seen: set[tuple[int, ...]] = set()
    best: tuple[float, Plan] | None = None
    records: list[dict[str, Any]] = []
    for r in range(rounds):
        plan = schedule(model.graph, num_segments, current, **dict(options or {}))
        if plan.stages in seen:
            log.info("round %d: the refitted model gives a plan already measured; stopping", r)
            break
        seen.add(plan.stages)
        _, blobs = build_segments(model, plan.stages, num_segments)
        timing = device.time_pipeline(blobs, f"{model.path.stem}_round{r}")
        predicted = _period_ms(model, plan.stages, num_segments, current)
        graphs = [graph_of(b, f"{model.path.stem}_round{r}_{i}") for i, b in enumerate(blobs)]
        samples += [Sample(g, ms, f"round {r} segment {i}") for i, (g, ms) in enumerate(zip(graphs, timing.stage_ms))]
        records.append(
            {
                "round": r,
                "spec": current.name,
                "predicted_bottleneck_ms": predicted,
                "measured_bottleneck_ms": timing.period_ms,
                "measured_stage_ms": list(timing.stage_ms),
                "device_runs": device.runs - start_runs,
            }
        )
        log.info("round %d: predicted %.3f ms, measured %.3f ms", r, predicted, timing.period_ms)
        improved = best is None or timing.period_ms < best[0] * (1 - MIN_GAIN)
        if best is None or timing.period_ms < best[0]:
            best = (timing.period_ms, plan)
        if not improved:
            break
        current = _refit(samples, spec, graphs, timing.stage_ms, timing.period_ms, name=f"{spec.name}+device{r}")
    assert best is not None
    return Refinement(best[1], current, tuple(records), device.runs - start_runs)


def _refit(
    samples: list[Sample], prior: EdgeTpuSpec, graphs: list, stage_ms: tuple[float, ...], period_ms: float, name: str
) -> EdgeTpuSpec:
    """The linear constants refitted to every segment measured so far; a shared link if the period shows one."""
    fitted = fit_linear(samples, prior, prior_weight=PRIOR_WEIGHT).with_(name=name)
    if period_ms > SHARED_MARGIN * max(stage_ms):
        moved = sum(c.in_bytes + c.out_bytes for g in graphs for c in stage_costs(g, (0,) * g.num_ops, 1, fitted))
        fitted = fitted.with_(shared_link_bytes_per_s=shared_link_rate(moved, period_ms / 1e3))
    return fitted
