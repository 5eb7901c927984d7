"""The device model of several models on one pool of Edge TPUs: shared TPUs, their switches, the pool's rate.

A pool runs each model's segments on TPUs of its own (a pipeline with replicas, :mod:`hardware.cost`) or
on TPUs it shares with other models. A shared TPU holds every model of its group whole (one segment each)
and serves their requests in turn:

* **co-compiled** models share the parameter cache, allocated in the compiler's order: the first model's
  layers first, each later model in the cache its predecessors left (:func:`cocompiled_costs`, the reference
  :func:`hardware.cost.stage_cost` with ``cache_taken``); a switch between them costs
  :func:`hardware.terms.switch_seconds` of 0 bytes;
* models compiled **separately** each get the whole cache, and a switch reloads the incoming model's cached
  parameters over the link (:func:`hardware.terms.switch_seconds` of its on-chip bytes).

Requests arrive interleaved in proportion to the models' weights (:func:`interleave`, a smooth weighted
round robin); a shared group sends each model's j-th request to its TPU ``j mod n`` (:data:`ROUND_ROBIN`),
so every model's work spreads over the group and which requests switch is known in advance.
:func:`pool_rates` predicts every model's throughput (its weight over the pool's time per weighted unit)
from the busiest TPU over a long stretch of that sequence, never above the shared host link (every model's link bytes,
reloads included) or the host's cores (:func:`hardware.terms.period_seconds`); :mod:`hardware.pool_sim`
simulates the same pool request by request.
"""

from __future__ import annotations

import functools
import math
import numbers
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from tflite_io import OpGraph, segment_interfaces

from . import terms
from .cost import StageCost, op_seconds, stage_cost
from .spec import EdgeTpuSpec

__all__ = [
    "FREE",
    "ROUND_ROBIN",
    "PoolModel",
    "PoolRates",
    "PoolStage",
    "cocompiled_costs",
    "group_load",
    "interleave",
    "pool_rates",
    "pool_tpus",
    "round_robin_busy",
    "round_robin_tpus",
    "whole_model_cost",
]

#: How a stage's request picks one of its TPUs: the first one free (the replicas of one model's stage share a
#: queue), or the group's round robin (a shared group: each model's j-th request to its TPU ``j mod n``).
FREE, ROUND_ROBIN = "free", "round-robin"

#: Requests of the interleaved sequence :func:`pool_rates` follows: long enough that the round robin's start
#: changes the busiest TPU's share by well under 0.1%.
HORIZON = 20_000


def whole_model_cost(graph: OpGraph, spec: EdgeTpuSpec, cache_taken: float = 0.0) -> StageCost:
    """``graph`` as one segment on one TPU, ``cache_taken`` bytes of the cache held by other models."""
    seg = segment_interfaces(graph, (0,) * graph.num_ops, 1)[0]
    return stage_cost(graph, seg, spec, op_seconds(graph, spec), cache_taken)


def cocompiled_costs(
    graphs: Sequence[OpGraph],
    spec: EdgeTpuSpec,
    cost_of: Callable[[OpGraph, EdgeTpuSpec, float], StageCost] = whole_model_cost,
) -> tuple[StageCost, ...]:
    """Each model of a co-compiled group as one segment, in the compiler's order: the first caches its layers
    as it would alone, each later one in the cache the earlier ones left (``cost_of``: :func:`whole_model_cost`
    or a memo of it)."""
    taken, out = 0.0, []
    for graph in graphs:
        cost = cost_of(graph, spec, taken)
        taken += cost.on_chip_bytes
        out.append(cost)
    return tuple(out)


def interleave(weights: Sequence[float], count: int) -> np.ndarray:
    """The first ``count`` requests of models with ``weights``, interleaved in proportion (smooth weighted
    round robin: each step the model furthest behind its share goes next; ties to the lower index)."""
    if not len(weights) or any(
        isinstance(w, bool) or not (isinstance(w, numbers.Real) and math.isfinite(w) and w > 0) for w in weights
    ):
        raise ValueError(f"weights must be positive numbers, got {list(weights)}")
    return np.asarray(_interleave(tuple(float(w) for w in weights), count), dtype=np.int64)


@functools.lru_cache(maxsize=64)
def _interleave(weights: tuple[float, ...], count: int) -> tuple[int, ...]:
    credit = [0.0] * len(weights)
    total = sum(weights)
    out = []
    for _ in range(count):
        credit = [c + w for c, w in zip(credit, weights)]
        k = max(range(len(credit)), key=lambda i: (credit[i], -i))
        credit[k] -= total
        out.append(k)
    return tuple(out)


def round_robin_tpus(sequence: np.ndarray, tpus: int) -> np.ndarray:
    """The TPU (0..``tpus``-1) of each request of a shared group: each model's j-th request goes to TPU
    ``j mod tpus``, so every model's work spreads evenly over the group whatever the interleave."""
    nth = np.zeros(len(sequence), dtype=np.int64)
    for k in np.unique(sequence):
        mine = np.flatnonzero(sequence == k)
        nth[mine] = np.arange(len(mine))
    return nth % tpus


def round_robin_busy(
    sequence: np.ndarray, seconds: Sequence[float], switch_s: Sequence[float], tpus: int
) -> tuple[np.ndarray, np.ndarray]:
    """A shared group's TPUs serving ``sequence`` (its models' requests in arrival order, as indices into
    ``seconds`` and ``switch_s``) by :func:`round_robin_tpus`: (busy seconds per TPU, switched requests per
    model). A request switches where its TPU last ran another model."""
    seconds_a, switch_a = np.asarray(seconds, dtype=np.float64), np.asarray(switch_s, dtype=np.float64)
    busy = np.zeros(tpus)
    switched = np.zeros(len(seconds_a))
    where = round_robin_tpus(sequence, tpus)
    for d in range(tpus):
        sub = sequence[where == d]
        if not len(sub):
            continue
        changed = np.flatnonzero(sub[1:] != sub[:-1]) + 1
        busy[d] = float(seconds_a[sub].sum() + switch_a[sub[changed]].sum())
        np.add.at(switched, sub[changed], 1.0)
    return busy, switched


@dataclass(frozen=True)
class PoolStage:
    """One segment of a model in the pool: its time per request, the TPUs that run it and how a request
    picks one (:data:`FREE` or :data:`ROUND_ROBIN`, with ``group``: the shared group's index)."""

    seconds: float
    devices: tuple[int, ...]
    dispatch: str = FREE
    group: int = -1


@dataclass(frozen=True)
class PoolModel:
    """One model of a pool: its weight, its stages, what a switch to it costs on a shared TPU
    (:func:`hardware.terms.switch_seconds`), and per request its bytes over the host link (activations and
    streamed parameters) and its host ops' time."""

    name: str
    weight: float
    stages: tuple[PoolStage, ...]
    switch_s: float = 0.0
    reload_bytes: float = 0.0
    link_bytes: float = 0.0
    host_s: float = 0.0

    @property
    def shared(self) -> bool:
        """Whether the model runs on TPUs shared with other models (its stages go round robin)."""
        return any(s.dispatch == ROUND_ROBIN for s in self.stages)

    @property
    def latency_s(self) -> float:
        """One request alone: its stages back to back, and a switch first where its TPUs are shared."""
        return sum(s.seconds for s in self.stages) + (self.switch_s if self.shared else 0.0)


def pool_tpus(models: Sequence[PoolModel]) -> int:
    """The TPUs a pool's models run on: one more than the highest TPU index."""
    return 1 + max(d for m in models for s in m.stages for d in s.devices)


def group_load(
    sequence: np.ndarray, members: Sequence[int], seconds: Sequence[float], switch_s: Sequence[float], tpus: int
) -> tuple[np.ndarray, np.ndarray]:
    """A shared group serving its models' requests out of ``sequence`` (every model's, by model index) with
    :func:`round_robin_busy`: (busy seconds on each of its ``tpus`` TPUs over the sequence, the share of each
    member's requests that switch). ``members``: the group's model indices, in the order of ``seconds`` and
    ``switch_s``."""
    lut = np.full(max(int(sequence.max()), *members) + 1, -1, dtype=np.int64)
    lut[list(members)] = np.arange(len(members))
    local = lut[sequence]
    local = local[local >= 0]  # the group's requests in arrival order, as positions in ``members``
    busy, switched = round_robin_busy(local, seconds, switch_s, tpus)
    counts = np.bincount(local, minlength=len(members)).astype(np.float64)
    return busy, switched / np.maximum(counts, 1.0)


@dataclass(frozen=True)
class PoolRates:
    """A pool's predicted rates: ``unit_s``, the seconds per weighted unit of requests (one request of every
    model per unit of its weight), each model's throughput (weight / unit_s) and what bounds the pool
    (``bound``: "tpu <i>", "shared link" or "host"); ``switches``: per model, the share of its requests that
    switch a TPU."""

    unit_s: float
    throughput_ips: tuple[float, ...]
    bound: str
    tpu_busy_s: tuple[float, ...]
    switches: tuple[float, ...]


def _per_unit(models: Sequence[PoolModel], sequence: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(per TPU busy seconds per weighted unit, per model share of requests that switch): a stage dispatched
    to the first free TPU splits its work evenly over its replicas (exactly ``weight * seconds / replicas``);
    a shared group's round robin follows ``sequence`` (deterministic service times)."""
    busy = np.zeros(pool_tpus(models))
    share = np.zeros(len(models))
    units = len(sequence) / float(sum(m.weight for m in models))
    groups: dict[int, list[tuple[int, PoolStage]]] = {}
    for i, m in enumerate(models):
        for stage in m.stages:
            if stage.dispatch == FREE:
                busy[list(stage.devices)] += m.weight * stage.seconds / len(stage.devices)
            else:
                groups.setdefault(stage.group, []).append((i, stage))
    for members in groups.values():
        devices = members[0][1].devices
        if any(st.devices != devices for _, st in members):
            raise ValueError("the models of a shared group must share the same TPUs")
        index = [i for i, _ in members]
        group_busy, group_share = group_load(
            sequence, index, [st.seconds for _, st in members], [models[i].switch_s for i in index], len(devices)
        )
        busy[list(devices)] += group_busy / units
        share[index] = group_share
    return busy, share


def pool_rates(models: Sequence[PoolModel], spec: EdgeTpuSpec, horizon: int = HORIZON) -> PoolRates:
    """Every model's predicted throughput when requests arrive interleaved by weight (module docstring)."""
    if not models:
        raise ValueError("a pool needs at least one model")
    sequence = interleave([m.weight for m in models], horizon)
    per_unit, share = _per_unit(models, sequence)
    link = sum(m.weight * (m.link_bytes + share[i] * m.reload_bytes) for i, m in enumerate(models))
    host = sum(m.weight * m.host_s for m in models)
    unit_s = terms.period_seconds(spec, per_unit, link, None, host)
    tpu = int(np.argmax(per_unit))
    bound = (
        f"tpu {tpu}"
        if unit_s <= per_unit[tpu] * (1 + 1e-12)
        else ("shared link" if unit_s <= float(terms.shared_link_seconds(spec, link)) * (1 + 1e-12) else "host")
    )
    return PoolRates(
        unit_s=unit_s,
        throughput_ips=tuple(m.weight / unit_s for m in models),
        bound=bound,
        tpu_busy_s=tuple(float(b) for b in per_unit),
        switches=tuple(float(s) for s in share),
    )
