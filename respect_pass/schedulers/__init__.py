"""Schedulers. Every one has the signature ``(graph, num_stages, cost, **options) -> Plan``.

``cost`` is an :class:`hardware.EdgeTpuSpec` (None: the ``usb`` preset). The search code the learned
scheduler shares (``split``: the best cuts over candidate orders; ``refine``: local moves) lives here
beside ``dp``; :mod:`respect_pass.policy` holds only the learned parts (features, network, decoding,
checkpoint, training), so imports point one way: schedulers -> policy for inference, and only the
training code (policy.labels, policy.train) reads schedulers, never the other way round at import time.
"""

from __future__ import annotations

from collections.abc import Callable

from tflite_io import RespectPassError

from ..plan import Plan
from .compiler import compiler_schedule
from .dp import dp_schedule
from .exact import exact_schedule
from .given import given_schedule
from .multiorder import multiorder_schedule
from .profiling import profiling_schedule
from .respect import respect_exact_schedule, respect_schedule

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
