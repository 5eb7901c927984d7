"""Schedulers. Every one has the signature ``(graph, num_stages, cost, **options) -> Plan``.

``cost`` is an :class:`hardware.EdgeTpuSpec` (None: the ``usb`` preset). The search code the learned
scheduler shares (``split``: the best cuts over candidate orders; ``refine``: local moves) lives here
beside ``dp``; :mod:`respect_pass.policy` holds only the learned parts (features, network, decoding,
checkpoint, training), so imports point one way: schedulers -> policy for inference, and only the
training code (policy.labels, policy.train) reads schedulers, never the other way round at import time.
"""

from __future__ import annotations

from collections.abc import Callable

from hardware import EdgeTpuSpec
from tflite_io import OpGraph, RespectPassError

from ..objectives import DEFAULT_ALPHA
from ..plan import Plan
from . import respect as _respect
from .compiler import compiler_schedule
from .dp import dp_schedule
from .exact import exact_schedule
from .given import given_schedule
from .multiorder import multiorder_schedule
from .profiling import profiling_schedule


def _check_samples(samples: int) -> None:
    if samples < 0:
        raise RespectPassError(f"--samples must be >= 0, got {samples}")


def respect_schedule(
    graph: OpGraph,
    num_stages: int,
    cost: EdgeTpuSpec | None = None,
    *,
    samples: int = 8,
    seed: int = 0,
    objective: str = "latency",
    alpha: float = DEFAULT_ALPHA,
    extra_samples: int = 0,
) -> Plan:
    """The learned scheduler with the options the command line offers (:func:`.respect.respect_schedule`)."""
    _check_samples(samples)
    if extra_samples < 0:
        raise RespectPassError(f"--extra-samples must be >= 0, got {extra_samples}")
    return _respect.respect_schedule(
        graph, num_stages, cost, samples=samples, seed=seed, objective=objective, alpha=alpha, extra_samples=extra_samples
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
) -> Plan:
    """CP-SAT warm-started from the learned scheduler's plan."""
    _check_samples(samples)
    return _respect.respect_exact_schedule(
        graph,
        num_stages,
        cost,
        time_limit_s=time_limit_s,
        workers=workers,
        samples=samples,
        seed=seed,
        objective=objective,
        alpha=alpha,
    )


__all__ = ["Scheduler", "SCHEDULERS", "get_scheduler"]

#: ``(graph, num_stages, cost, **options) -> Plan``; each scheduler takes its own keyword options.
Scheduler = Callable[..., Plan]

#: Registered schedulers by command-line name.
SCHEDULERS: dict[str, Scheduler] = {
    "compiler": compiler_schedule,
    "profiling": profiling_schedule,
    "dp": dp_schedule,
    "multiorder": multiorder_schedule,
    "exact": exact_schedule,
    "respect": respect_schedule,
    "respect+exact": respect_exact_schedule,
    "given": given_schedule,
}


def get_scheduler(name: str) -> Scheduler:
    """The scheduler called ``name``; a RespectPassError lists the known ones otherwise."""
    try:
        return SCHEDULERS[name]
    except KeyError:
        raise RespectPassError(f"unknown scheduler '{name}' (known: {', '.join(sorted(SCHEDULERS))})") from None
