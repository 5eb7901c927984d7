"""Discrete-event simulation of a pool of Edge TPUs serving several models (:mod:`hardware.pool`).

Requests of every model are pushed in one interleaved sequence (:func:`hardware.pool.interleave`, in
proportion to the weights), at most ``in_flight`` pushed and not yet popped, and no sooner after the
last request that used the shared host link or the host's cores allows (two clocks: its link bytes, a reload
included, :func:`hardware.terms.shared_link_seconds`; its host ops, :func:`hardware.terms.host_bound_seconds`;
a request waits only for the resources it uses). Each request runs its model's
stages in order; a stage takes the first free of its TPUs (:data:`~hardware.pool.FREE`) or the one its
model's round robin over its group names (:data:`~hardware.pool.ROUND_ROBIN`); a TPU serves requests in the order they
reach it, and a request on a TPU that last ran another model first pays that model's switch
(:attr:`~hardware.pool.PoolModel.switch_s`). Results leave per model in request order. Service times
are the stages' times, optionally with seeded lognormal jitter as in :mod:`hardware.simulate`.

Queues between stages are unbounded here (the in-flight limit bounds them); :mod:`hardware.simulate`'s
one-slot queues matter for one pipeline's latency, not for a pool's throughput.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from . import terms
from .pool import FREE, PoolModel, interleave, pool_tpus
from .spec import EdgeTpuSpec

__all__ = ["ModelRun", "PoolRun", "default_in_flight", "simulate_pool"]


@dataclass(frozen=True)
class ModelRun:
    """One model's figures in a simulated pool run (times in ms)."""

    name: str
    count: int
    throughput_ips: float
    latency_ms: float  # one request alone: its stages (and a switch where its TPU is shared) back to back
    latency_p50_ms: float
    latency_p99_ms: float
    switches: int


@dataclass(frozen=True)
class PoolRun:
    """A simulated pool run: every model's figures, the makespan, each TPU's busy share."""

    count: int
    makespan_ms: float
    models: tuple[ModelRun, ...]
    tpu_busy: tuple[float, ...]


def default_in_flight(weights: Sequence[float], tpus: int) -> int:
    """Requests in flight that keep a pool's busiest TPU busy: twice the TPUs plus one interleave cycle (the
    requests in which the lightest model appears once, ``sum(weights) / min(weights)``). Fewer leave TPUs idle
    while a long request of one model holds the queue of another (the prediction is the pool's capacity)."""
    return 2 * (tpus + math.ceil(sum(weights) / min(weights) - 1e-9))


def simulate_pool(
    models: Sequence[PoolModel],
    spec: EdgeTpuSpec,
    count: int = 2000,
    in_flight: int | None = None,
    jitter: float = 0.0,
    seed: int = 0,
) -> PoolRun:
    """Serve ``count`` interleaved requests (module docstring); ``in_flight`` defaults to
    :func:`default_in_flight`."""
    if count < 2 * len(models):
        raise ValueError(f"count must be at least two requests per model ({2 * len(models)}), got {count}")
    tpus = pool_tpus(models)
    window = in_flight if in_flight is not None else default_in_flight([m.weight for m in models], tpus)
    if window < 1:
        raise ValueError(f"in_flight must be >= 1, got {window}")
    sequence = interleave([m.weight for m in models], count)
    rng = np.random.default_rng(seed)
    sigma = float(np.sqrt(np.log1p(jitter**2))) if jitter > 0 else 0.0
    free = np.zeros(tpus)
    busy = np.zeros(tpus)
    last = np.full(tpus, -1)
    turn: dict[int, int] = {}
    push = np.zeros(count)
    done = np.zeros(count)
    switched = np.zeros(count, dtype=bool)
    link_free = host_free = 0.0  # the shared host link and the host's cores: two resources, two clocks
    for i, k in enumerate(sequence):
        model = models[k]
        t = max(
            push[i - 1] if i else 0.0,  # pushed in order
            done[i - window] if i >= window else 0.0,
            link_free if model.link_bytes > 0 or model.reload_bytes > 0 else 0.0,  # only for what it may use
            host_free if model.host_s > 0 else 0.0,
        )
        push[i] = t
        for stage in model.stages:
            if stage.dispatch == FREE:
                d = min(stage.devices, key=lambda x: (free[x], x))
            else:
                j = turn.get(k, 0)  # the model's own round robin over its group (hardware.pool.round_robin_tpus)
                turn[k] = j + 1
                d = stage.devices[j % len(stage.devices)]
            service = stage.seconds * (rng.lognormal(-(sigma**2) / 2, sigma) if sigma else 1.0)
            if last[d] not in (-1, k):
                service += model.switch_s
                switched[i] = True
            last[d] = k
            start = max(t, free[d])
            t = free[d] = start + service
            busy[d] += service
        done[i] = t
        link = model.link_bytes + (model.reload_bytes if switched[i] else 0.0)
        if link > 0:
            link_free = max(link_free, push[i]) + float(terms.shared_link_seconds(spec, link))
        if model.host_s > 0:
            host_free = push[i] + float(terms.host_bound_seconds(spec, model.host_s))
    return _figures(models, sequence, push, done, switched, busy)


def _figures(
    models: Sequence[PoolModel],
    sequence: np.ndarray,
    push: np.ndarray,
    done: np.ndarray,
    switched: np.ndarray,
    busy: np.ndarray,
) -> PoolRun:
    """Per model: pops in request order, throughput from its first to its last pop, latency push to pop."""
    runs = []
    makespan = float(np.max(done) - push[0])
    for k, model in enumerate(models):
        mine = np.flatnonzero(sequence == k)
        popped = np.maximum.accumulate(done[mine])
        latency = (popped - push[mine]) * 1e3
        span = float(popped[-1] - popped[0])
        runs.append(
            ModelRun(
                name=model.name,
                count=len(mine),
                throughput_ips=(len(mine) - 1) / span if span > 0 else float("inf"),
                latency_ms=model.latency_s * 1e3,
                latency_p50_ms=float(np.percentile(latency, 50)),
                latency_p99_ms=float(np.percentile(latency, 99)),
                switches=int(np.count_nonzero(switched[mine])),
            )
        )
    return PoolRun(
        count=len(sequence),
        makespan_ms=makespan * 1e3,
        models=tuple(runs),
        tpu_busy=tuple(float(b / makespan) if makespan > 0 else 0.0 for b in busy),
    )
