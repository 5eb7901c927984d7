"""The ``given`` scheduler: a stage map the user chose (``respect-pass ... --stages S0,S1,...``).

It schedules nothing: it checks the map against the pipeline rules
(:func:`tflite_io.validate_stage_map`, whose errors name the op that breaks a
rule) and returns it as a :class:`~respect_pass.plan.Plan`, so a split made
elsewhere (by hand, or by libcoral's profiling partitioner) is written,
verified and predicted by the same device model as ours.
"""

from __future__ import annotations

import time
from collections.abc import Sequence

from hardware import EdgeTpuSpec
from tflite_io import OpGraph, StageMapError, validate_stage_map

from ..plan import Plan

__all__ = ["given_schedule", "parse_stages"]


def parse_stages(text: str) -> tuple[int, ...]:
    """``"0,0,1,1"`` -> ``(0, 0, 1, 1)``; a StageMapError names the first entry that is not an integer."""
    parts = [p.strip() for p in text.split(",")]
    for i, p in enumerate(parts):
        if not p.lstrip("-").isdigit():
            raise StageMapError(
                f"--stages entry {i} is {p!r}, not a stage number (give one integer per op, comma-separated)"
            )
    return tuple(int(p) for p in parts)


def given_schedule(graph: OpGraph, num_stages: int, cost: EdgeTpuSpec | None = None, *, stages: Sequence[int]) -> Plan:
    """``stages`` (one stage per op, in the model's op order) after the pipeline checks."""
    t0 = time.perf_counter()
    checked = validate_stage_map(graph, stages, num_stages)
    return Plan(checked, num_stages, "given", solve_seconds=time.perf_counter() - t0)
