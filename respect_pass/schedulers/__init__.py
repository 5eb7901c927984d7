"""Schedulers. Every one has the signature ``(graph, num_stages, cost) -> Plan``."""
from __future__ import annotations

from collections.abc import Callable

from tflite_io import OpGraph, RespectPassError

from ..plan import Plan
from .compiler import compiler_schedule
from .dp import dp_schedule
from .exact import exact_schedule
from .multiorder import multiorder_schedule
from .profiling import profiling_schedule

__all__ = ["Scheduler", "SCHEDULERS", "get_scheduler"]

Scheduler = Callable[[OpGraph, int, object | None], Plan]

#: Registered schedulers by command-line name.
SCHEDULERS: dict[str, Scheduler] = {
    "compiler": compiler_schedule,
    "profiling": profiling_schedule,
    "dp": dp_schedule,
    "multiorder": multiorder_schedule,
    "exact": exact_schedule,
}


def get_scheduler(name: str) -> Scheduler:
    """The scheduler called ``name``; a RespectPassError lists the known ones otherwise."""
    try:
        return SCHEDULERS[name]
    except KeyError:
        raise RespectPassError(f"unknown scheduler '{name}' (known: {', '.join(sorted(SCHEDULERS))})") from None
