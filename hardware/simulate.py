"""Discrete-event simulation of N requests through a K-stage Edge TPU pipeline.

Mirrors a pipelined runner (pycoral's PipelinedModelRunner or
:mod:`hardware.runner`): one thread per segment and internal queues of size 1
between segments, so a stage that finishes a request blocks until the queue to
the next stage has room. Requests are pushed either open-loop (one every
``interval_ms``) or closed-loop with at most ``in_flight`` requests in the
pipeline, which is how throughput and loaded latency are measured: a client
that pushes everything at once only measures how long requests wait in an
unbounded input queue. An optional ``min_period_ms`` models a host link that
all stages share: it carries one request's traffic per ``min_period_ms``.
With deterministic stage times the steady-state period is
``max(max_k T_k, min_period_ms)``; optional seeded jitter models run-to-run noise.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

__all__ = ["PipelineRun", "measure_pipeline", "simulate_pipeline", "PipelineFigures"]

QUEUE_SIZE = 1  # libcoral's kInternalQueueSize


@dataclass(frozen=True)
class PipelineRun:
    """Outcome of a simulated run (times in ms)."""

    count: int
    makespan_ms: float
    throughput_ips: float
    latency_p50_ms: float
    latency_p99_ms: float
    first_latency_ms: float
    stage_busy: tuple[float, ...]


@dataclass(frozen=True)
class PipelineFigures:
    """The figures ``run_pipeline`` reports, with the same meaning in sim and on Edge TPUs (ms)."""

    latency_ms: float  # one request through an idle pipeline
    bottleneck_ms: float  # steady-state period with at most K requests in flight
    throughput_ips: float
    latency_loaded_p50_ms: float  # push-to-pop latency at that steady state
    latency_loaded_p99_ms: float


def simulate_pipeline(
    stage_ms: Sequence[float],
    count: int = 100,
    interval_ms: float = 0.0,
    jitter: float = 0.0,
    seed: int = 0,
    in_flight: int | None = None,
    min_period_ms: float = 0.0,
) -> PipelineRun:
    """Push ``count`` requests through the stages and time them.

    Request i is pushed at ``i * interval_ms`` (0 = all at once) and, when
    ``in_flight`` is given, not before request ``i - in_flight`` has been
    popped. Latency is measured from a request's push to its pop; throughput
    over the steady state (first to last completion). ``jitter`` is the
    coefficient of variation of a lognormal factor on each service time.
    """
    if count < 1:
        raise ValueError(f"count must be >= 1, got {count}")
    if in_flight is not None and in_flight < 1:
        raise ValueError(f"in_flight must be >= 1, got {in_flight}")
    base = np.asarray(stage_ms, dtype=float)
    service = _service_times(base, count, jitter, seed)
    arrive, depart = _push_and_leave(service, interval_ms, in_flight, min_period_ms)
    done = depart[:, -1]
    latency = done - arrive
    span = float(done[-1] - done[0])
    period = max(float(np.max(base)), min_period_ms)
    throughput = (count - 1) / span * 1e3 if count > 1 and span > 0 else 1e3 / period
    makespan = float(done[-1] - arrive[0])
    busy = tuple(float(service[:, j].sum() / makespan) if makespan > 0 else 0.0 for j in range(len(base)))
    return PipelineRun(
        count=count,
        makespan_ms=makespan,
        throughput_ips=throughput,
        latency_p50_ms=float(np.percentile(latency, 50)),
        latency_p99_ms=float(np.percentile(latency, 99)),
        first_latency_ms=float(latency[0]),
        stage_busy=busy,
    )


def _service_times(base: np.ndarray, count: int, jitter: float, seed: int) -> np.ndarray:
    """Each request's time in each stage (count x K): ``base``, times a seeded lognormal factor with ``jitter``."""
    if jitter > 0:
        rng = np.random.default_rng(seed)
        sigma = np.sqrt(np.log1p(jitter**2))
        return base[None, :] * rng.lognormal(-(sigma**2) / 2, sigma, size=(count, len(base)))
    return np.broadcast_to(base, (count, len(base)))


def _push_and_leave(
    service: np.ndarray, interval_ms: float, in_flight: int | None, min_period_ms: float
) -> tuple[np.ndarray, np.ndarray]:
    """When each request is pushed, and when it leaves each stage (count x K), queues of :data:`QUEUE_SIZE`."""
    count, k = service.shape
    arrive = np.zeros(count)
    start = np.zeros((count, k))
    depart = np.zeros((count, k))  # when the request leaves stage j (enters queue j -> j+1)
    for i in range(count):
        arrive[i] = i * interval_ms
        if in_flight is not None and i >= in_flight:
            arrive[i] = max(arrive[i], depart[i - in_flight, -1])
        for j in range(k):
            ready = arrive[i] if j == 0 else depart[i, j - 1]
            free = depart[i - 1, j] if i > 0 else 0.0  # the stage's thread released request i-1
            if j == 0 and i > 0:
                free = max(free, start[i - 1, 0] + min_period_ms)
            start[i, j] = max(ready, free)
            finish = start[i, j] + service[i, j]
            # Blocking after service: request i leaves stage j once queue j -> j+1 has room,
            # i.e. once stage j+1 has taken request i - QUEUE_SIZE - 1 out of it.
            blocked = start[i - QUEUE_SIZE - 1, j + 1] if j + 1 < k and i > QUEUE_SIZE else 0.0
            depart[i, j] = max(finish, blocked)
    return arrive, depart


def measure_pipeline(
    stage_ms: Sequence[float], count: int = 100, min_period_ms: float = 0.0, jitter: float = 0.0, seed: int = 0
) -> PipelineFigures:
    """Measure a simulated pipeline the way :func:`hardware.coral.run_coral` measures TPUs.

    Idle latency: one request at a time. Period, throughput and loaded
    latency: ``count`` requests with at most K (the number of stages) in
    flight, which keeps the slowest stage busy (the sum of K stage times is
    at most K times the slowest) without queueing beyond the pipeline.
    """
    k = len(stage_ms)
    idle = simulate_pipeline(stage_ms, count=1, jitter=jitter, seed=seed)
    n = max(count, 2 * k + 2)
    loaded = simulate_pipeline(stage_ms, count=n, jitter=jitter, seed=seed + 1, in_flight=k, min_period_ms=min_period_ms)
    return PipelineFigures(
        latency_ms=idle.first_latency_ms,
        bottleneck_ms=1e3 / loaded.throughput_ips,
        throughput_ips=loaded.throughput_ips,
        latency_loaded_p50_ms=loaded.latency_p50_ms,
        latency_loaded_p99_ms=loaded.latency_p99_ms,
    )
