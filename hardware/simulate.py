"""Discrete-event simulation of N requests through a K-stage Edge TPU pipeline.

Mirrors pycoral's PipelinedModelRunner: one thread per segment, an unbounded
input queue (the caller pushes as fast as it likes) and internal queues of
size 1 between segments, so a stage that finishes a request blocks until the
queue to the next stage has room. With deterministic stage times the steady
state period is max_k T_k; optional seeded jitter models run-to-run noise.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

__all__ = ["PipelineRun", "simulate_pipeline"]

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


def simulate_pipeline(
    stage_ms: Sequence[float],
    count: int = 100,
    interval_ms: float = 0.0,
    jitter: float = 0.0,
    seed: int = 0,
) -> PipelineRun:
    """Push ``count`` requests (one every ``interval_ms``; 0 = all at once) through the stages.

    Latency is measured from a request's push to its pop; throughput over the
    steady state (first to last completion). ``jitter`` is the coefficient of
    variation of a lognormal factor on each service time.
    """
    if count < 1:
        raise ValueError(f"count must be >= 1, got {count}")
    k = len(stage_ms)
    rng = np.random.default_rng(seed)
    base = np.asarray(stage_ms, dtype=float)
    if jitter > 0:
        sigma = np.sqrt(np.log1p(jitter**2))
        service = base[None, :] * rng.lognormal(-sigma**2 / 2, sigma, size=(count, k))
    else:
        service = np.broadcast_to(base, (count, k))
    arrive = np.arange(count) * interval_ms
    start = np.zeros((count, k))
    depart = np.zeros((count, k))  # when the request leaves stage j (enters queue j -> j+1)
    for i in range(count):
        for j in range(k):
            ready = arrive[i] if j == 0 else depart[i, j - 1]
            free = depart[i - 1, j] if i > 0 else 0.0  # the stage's thread released request i-1
            start[i, j] = max(ready, free)
            finish = start[i, j] + service[i, j]
            # Blocking after service: request i leaves stage j once queue j -> j+1 has room,
            # i.e. once stage j+1 has taken request i - QUEUE_SIZE - 1 out of it.
            blocked = start[i - QUEUE_SIZE - 1, j + 1] if j + 1 < k and i > QUEUE_SIZE else 0.0
            depart[i, j] = max(finish, blocked)
    done = depart[:, -1]
    latency = done - arrive
    span = float(done[-1] - done[0])
    throughput = (count - 1) / span * 1e3 if count > 1 and span > 0 else 1e3 / float(np.max(base))
    makespan = float(done[-1] - arrive[0])
    busy = tuple(float(service[:, j].sum() / makespan) if makespan > 0 else 0.0 for j in range(k))
    return PipelineRun(
        count=count,
        makespan_ms=makespan,
        throughput_ips=throughput,
        latency_p50_ms=float(np.percentile(latency, 50)),
        latency_p99_ms=float(np.percentile(latency, 99)),
        first_latency_ms=float(latency[0]),
        stage_busy=busy,
    )
