"""Discrete-event simulation of N requests through an Edge TPU pipeline of S stages, each on r >= 1 TPUs.

Mirrors a pipelined runner (pycoral's PipelinedModelRunner or
:mod:`hardware.runner`): one thread per segment (one per replica when a
stage runs on several TPUs, the replicas of a stage pulling from one queue)
and internal queues between stages: a stage that finishes a request holds it
until the queue to the next stage holds at most :data:`QUEUE_SIZE` requests
(libcoral's kInternalQueueSize), then pushes it. A request is served by
whichever replica of a stage is free first; with jitter, replicas finish out
of order, and results leave through a reorder buffer in request order (a
sequence number per request), where latency and throughput are measured.
Requests are pushed either open-loop (one every ``interval_ms``) or
closed-loop with at most ``in_flight`` requests pushed and not yet popped,
which is how throughput and loaded latency are measured: a client that pushes
everything at once only measures how long requests wait in an unbounded
input queue. An optional ``min_period_ms`` models a host link that all stages
share: it carries one request's traffic per ``min_period_ms``. With
deterministic stage times the steady-state period is
``max(max_s T_s / r_s, min_period_ms)``; optional seeded jitter models
run-to-run noise.

One TPU per stage (``replicas`` None or all 1) runs the closed-form
recurrence :func:`_push_and_leave`; replicas run the event-driven
:class:`_Replicated`, which gives the same times bit for bit on one TPU per
stage (tests/test_simulate.py checks it).
"""

from __future__ import annotations

import heapq
import math
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

__all__ = ["PipelineRun", "measure_pipeline", "simulate_pipeline", "PipelineFigures"]

QUEUE_SIZE = 1  # libcoral's kInternalQueueSize

_ARRIVE, _FINISH, _WAKE = 0, 1, 2  # event kinds of _Replicated


@dataclass(frozen=True)
class PipelineRun:
    """Outcome of a simulated run (times in ms). ``stage_busy``: the fraction of the makespan each stage's
    TPUs served requests (the mean over a stage's replicas). ``reordered``: requests that finished their
    last stage before an earlier request and waited for it in the reorder buffer (results always leave in
    request order)."""

    count: int
    makespan_ms: float
    throughput_ips: float
    latency_p50_ms: float
    latency_p99_ms: float
    first_latency_ms: float
    stage_busy: tuple[float, ...]
    reordered: int = 0


@dataclass(frozen=True)
class PipelineFigures:
    """The figures ``run_pipeline`` reports, with the same meaning in sim and on Edge TPUs (ms)."""

    latency_ms: float  # one request through an idle pipeline
    bottleneck_ms: float  # steady-state period with at most K (TPUs) requests in flight
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
    replicas: Sequence[int] | None = None,
) -> PipelineRun:
    """Push ``count`` requests through the stages and time them.

    Request i is pushed at ``i * interval_ms`` (0 = all at once) and, when
    ``in_flight`` is given, not before request ``i - in_flight`` has been
    popped. Stage s runs on ``replicas[s]`` TPUs (one each by default).
    Latency is measured from a request's push to its pop (out of the reorder
    buffer); throughput over the steady state (first to last pop; with replicas
    see :func:`_throughput`). ``jitter`` is the
    coefficient of variation of a lognormal factor on each service time.
    """
    if count < 1:
        raise ValueError(f"count must be >= 1, got {count}")
    if in_flight is not None and in_flight < 1:
        raise ValueError(f"in_flight must be >= 1, got {in_flight}")
    base = np.asarray(stage_ms, dtype=float)
    servers = _servers(replicas, len(base))
    service = _service_times(base, count, jitter, seed)
    if servers is None:
        arrive, depart = _push_and_leave(service, interval_ms, in_flight, min_period_ms)
        period = max(float(np.max(base)), min_period_ms)
    else:
        arrive, depart = _Replicated(service, servers, min_period_ms).run(interval_ms, in_flight)
        period = max(float(np.max(base / np.asarray(servers, dtype=float))), min_period_ms)
    done = depart[:, -1]
    popped = np.maximum.accumulate(done)  # the reorder buffer: request i leaves once i - 1 has
    latency = popped - arrive
    makespan = float(popped[-1] - arrive[0])
    return PipelineRun(
        count=count,
        makespan_ms=makespan,
        throughput_ips=_throughput(popped, servers, period),
        latency_p50_ms=float(np.percentile(latency, 50)),
        latency_p99_ms=float(np.percentile(latency, 99)),
        first_latency_ms=float(latency[0]),
        stage_busy=_busy(service, makespan, servers),
        reordered=int(np.count_nonzero(done < popped)),
    )


def _servers(replicas: Sequence[int] | None, num_stages: int) -> tuple[int, ...] | None:
    """``replicas`` checked (one positive count per stage); None when every stage has one TPU."""
    if replicas is None:
        return None
    servers = tuple(int(r) for r in replicas)
    if len(servers) != num_stages or any(r < 1 or r != q for r, q in zip(servers, replicas)):
        raise ValueError(f"replicas must be {num_stages} positive integers (one per stage), got {list(replicas)}")
    return servers if any(r > 1 for r in servers) else None


def _throughput(popped: np.ndarray, servers: tuple[int, ...] | None, period: float) -> float:
    """Requests per second from the first to the last pop; with replicas, from the first pop after the
    pipeline filled (one request per TPU) over a whole number of cycles of ``lcm(servers)`` requests (pops
    come in bursts) when the run is long enough. ``1 / period`` when nothing was timed."""
    count = len(popped)
    first = 0
    if servers is not None:
        warm, cycle = sum(servers), math.lcm(*servers)
        if count - 1 - warm >= cycle:
            first = warm + (count - 1 - warm) % cycle
    intervals = count - 1 - first
    span = float(popped[-1] - popped[first])
    return intervals / span * 1e3 if intervals > 0 and span > 0 else 1e3 / period


def _busy(service: np.ndarray, makespan: float, servers: tuple[int, ...] | None) -> tuple[float, ...]:
    """Each stage's share of the makespan spent serving, per TPU (a stage's service over its replicas)."""
    k = service.shape[1]
    if servers is None:
        return tuple(float(service[:, j].sum() / makespan) if makespan > 0 else 0.0 for j in range(k))
    return tuple(float(service[:, j].sum() / (makespan * servers[j])) if makespan > 0 else 0.0 for j in range(k))


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


class _Replicated:
    """The pipeline with ``servers[s]`` TPUs on stage s, as events in time order.

    The rules of :func:`_push_and_leave`, per queue instead of per request index: queue 0 is the
    client's (unbounded, in push order); a replica that finished a request holds it (and stays busy)
    until queue s -> s+1 holds at most :data:`QUEUE_SIZE` requests, held requests going first come
    first; a free replica takes the head of its stage's queue; stage 0 starts a request no sooner than
    ``min_period_ms`` after the previous one (the shared link). Results leave in request order.
    """

    def __init__(self, service: np.ndarray, servers: Sequence[int], min_period_ms: float) -> None:
        count, k = service.shape
        self.service = service
        self.min_period = min_period_ms
        self.free = list(servers)
        self.queues: list[deque[int]] = [deque() for _ in range(k)]  # waiting for stage s (0: the client's)
        self.held: list[deque[int]] = [deque() for _ in range(k)]  # served by stage s, waiting for queue s+1
        self.arrive = np.zeros(count)
        self.depart = np.zeros((count, k))
        self.finished = np.zeros(count, dtype=bool)
        self.popped = 0  # requests out of the reorder buffer
        self.next_start = -math.inf  # stage 0's next start the shared link allows
        self.waking = False
        self.events: list[tuple[float, int, int, int, int]] = []
        self.seq = 0

    def run(self, interval_ms: float, in_flight: int | None) -> tuple[np.ndarray, np.ndarray]:
        """Push the requests (all but the first ``in_flight`` when a pop lets them in); when each request
        is pushed, and when it leaves each stage (count x K)."""
        self.interval, self.in_flight = interval_ms, in_flight
        count = len(self.arrive)
        for i in range(count if in_flight is None else min(in_flight, count)):
            self._at(i * interval_ms, _ARRIVE, 0, i)
        while self.events:
            t, _, kind, s, i = heapq.heappop(self.events)
            if kind == _ARRIVE:
                self.arrive[i] = t
                self.queues[0].append(i)
                self._start(0, t)
            elif kind == _FINISH:
                self._finish(s, i, t)
            else:
                self.waking = False
                self._start(0, t)
        return self.arrive, self.depart

    def _at(self, t: float, kind: int, stage: int, request: int) -> None:
        heapq.heappush(self.events, (t, self.seq, kind, stage, request))
        self.seq += 1

    def _start(self, s: int, t: float) -> None:
        """Free replicas of stage s take requests from its queue; room in the queue lets stage s-1 push."""
        while self.free[s] and self.queues[s]:
            if s == 0 and t < self.next_start:
                if not self.waking:
                    self.waking = True
                    self._at(self.next_start, _WAKE, 0, -1)
                return
            i = self.queues[s].popleft()
            self.free[s] -= 1
            self._at(t + self.service[i, s], _FINISH, s, i)
            if s == 0:
                self.next_start = t + self.min_period
            else:
                self._push(s - 1, t)

    def _push(self, s: int, t: float) -> None:
        """Requests held by stage s move on to queue s+1 while it has room; their replicas are free again."""
        while self.held[s] and len(self.queues[s + 1]) <= QUEUE_SIZE:
            i = self.held[s].popleft()
            self.depart[i, s] = t
            self.free[s] += 1
            self.queues[s + 1].append(i)
            self._start(s + 1, t)
            self._start(s, t)

    def _finish(self, s: int, i: int, t: float) -> None:
        """Stage s finished request i: the last stage hands it to the reorder buffer, others push it on."""
        if s + 1 < len(self.queues):
            self.held[s].append(i)
            self._push(s, t)
            return
        self.depart[i, s] = t
        self.free[s] += 1
        self.finished[i] = True
        while self.popped < len(self.finished) and self.finished[self.popped]:
            # the buffer's head (and whatever finished behind it) pops now; a closed loop pushes one more each
            nxt = self.popped + (self.in_flight or 0)
            if self.in_flight is not None and nxt < len(self.finished):
                self._at(max(nxt * self.interval, t), _ARRIVE, 0, nxt)
            self.popped += 1
        self._start(s, t)


def measure_pipeline(
    stage_ms: Sequence[float],
    count: int = 100,
    min_period_ms: float = 0.0,
    jitter: float = 0.0,
    seed: int = 0,
    replicas: Sequence[int] | None = None,
) -> PipelineFigures:
    """Measure a simulated pipeline the way :func:`hardware.coral.run_coral` measures TPUs.

    Idle latency: one request at a time. Period, throughput and loaded
    latency: ``count`` requests with at most K in flight, K the number of
    TPUs (the stages' replicas added up; the number of stages without
    replicas), which keeps the slowest stage busy (the sum of the stage times
    is at most K times the slowest time per replica) without queueing beyond
    the pipeline.
    """
    k = len(stage_ms) if replicas is None else sum(replicas)
    idle = simulate_pipeline(stage_ms, count=1, jitter=jitter, seed=seed, replicas=replicas)
    n = max(count, 2 * k + 2, k + 1 + (math.lcm(*replicas) if replicas is not None else 1))
    loaded = simulate_pipeline(
        stage_ms, count=n, jitter=jitter, seed=seed + 1, in_flight=k, min_period_ms=min_period_ms, replicas=replicas
    )
    return PipelineFigures(
        latency_ms=idle.first_latency_ms,
        bottleneck_ms=1e3 / loaded.throughput_ips,
        throughput_ips=loaded.throughput_ips,
        latency_loaded_p50_ms=loaded.latency_p50_ms,
        latency_loaded_p99_ms=loaded.latency_p99_ms,
    )
