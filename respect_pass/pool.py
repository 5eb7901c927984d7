"""Several models on one pool of Edge TPUs: which TPUs serve which model, with which segments, replicas and
co-compiled groups (``respect-pass pool``).

The pool's TPUs are split into groups. A group of one model runs that model's best plan on its TPUs (the
scheduler's pipeline with replicas, :func:`respect_pass.replicas.with_replicas`). A group of several models
is shared: each of its TPUs holds every model of the group whole, co-compiled in a chosen order (the
compiler caches the first model's parameters first) or compiled separately (each switch reloads), and the
group's requests go round robin over its TPUs (:mod:`hardware.pool`). Requests arrive interleaved in
proportion to the weights, so every model runs at ``weight / unit_s``; the search maximises that common
rate (the minimum of throughput / weight), over every partition of the models into groups, every split of
the TPUs between groups, both compile modes and every co-compile order (up to :data:`ORDERS_UP_TO` models a
group; beyond, the orders by parameter bytes). Each group's option is judged alone (its busiest TPU, its
share of the shared link and of the host), the pool by :func:`hardware.pool.pool_rates`.

With rates (``--rates``), the weights are the rates in requests per second and the pool is the fewest TPUs
whose common rate reaches 1 (every rate met); where even all the TPUs fall short, the plan for all of them
is returned with a line per rate not met: a rate out of reach of its model alone on every TPU gets the most
it can beside the others' full rates (:func:`_short_of_rates`), rates out of reach only together the same
share each.
"""

from __future__ import annotations

import itertools
import logging
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, replace

import numpy as np

from hardware import EdgeTpuSpec, StageCost, stage_costs, terms
from hardware.cost import pipeline_period_ms, shared_link_ms
from hardware.pool import (
    FREE,
    HORIZON,
    ROUND_ROBIN,
    PoolModel,
    PoolRates,
    PoolStage,
    cocompiled_costs,
    group_load,
    interleave,
    pool_rates,
    whole_model_cost,
)
from tflite_io import OpGraph, RespectPassError

from .plan import REL_TOL, Plan
from .replicas import pipeline_stages, with_replicas
from .schedulers import get_scheduler

__all__ = [
    "COCOMPILED",
    "MAX_POOL_MODELS",
    "MAX_POOL_TPUS",
    "OWN",
    "ORDERS_UP_TO",
    "PoolEntry",
    "PoolGroup",
    "PoolPlan",
    "SEPARATE",
    "plan_pool",
]

log = logging.getLogger(__name__)

#: The most models and TPUs a pool is planned for: the search enumerates every partition of the models and
#: every split of the TPUs (Bell(6) = 203 partitions; Coral's PCIe carriers hold at most 8 TPUs, hubs 16).
MAX_POOL_MODELS = 6
MAX_POOL_TPUS = 16
#: Groups of up to this many models try every co-compile order; larger ones try the orders by parameter bytes.
ORDERS_UP_TO = 4
#: A group's mode: one model on TPUs of its own; several co-compiled; several compiled separately.
OWN, COCOMPILED, SEPARATE = "own", "cocompiled", "separate"


@dataclass(frozen=True)
class PoolEntry:
    """One model of the pool: a name (its file's stem), its graph (placed, host ops timed) and its weight
    (with rates: its required requests per second)."""

    name: str
    graph: OpGraph
    weight: float = 1.0


@dataclass(frozen=True)
class PoolGroup:
    """TPUs and the models they serve (indices into the entries; a co-compiled group's in compile order)."""

    tpus: tuple[int, ...]
    models: tuple[int, ...]
    mode: str


@dataclass(frozen=True)
class PoolPlan:
    """A pool's plan: its groups, each model's plan (devices in pool TPU indices) and device-model
    description, the predicted rates; ``own``: the rates of the best plan with every model on TPUs of its
    own (None with fewer TPUs than models); with rates, ``unmet`` names the rates the plan does not meet."""

    entries: tuple[PoolEntry, ...]
    available: int
    groups: tuple[PoolGroup, ...]
    plans: tuple[Plan, ...]
    models: tuple[PoolModel, ...]
    costs: tuple[tuple[StageCost, ...], ...]  # each model's segments as the plan costs them (co-compiled caches)
    rates: PoolRates
    objective: str
    own: PoolRates | None
    unmet: tuple[str, ...] = ()
    solve_seconds: float = 0.0

    @property
    def tpus(self) -> int:
        """TPUs the plan uses."""
        return sum(len(g.tpus) for g in self.groups)

    @property
    def throughput_ips(self) -> tuple[float, ...]:
        return self.rates.throughput_ips


@dataclass(frozen=True)
class _Option:
    """One way to serve a block of models on ``tpus`` TPUs, judged alone: per weighted unit, its busiest
    TPU (``unit_s``), its bytes over the shared link and its host time; plans and models numbered from TPU 0."""

    block: tuple[int, ...]
    mode: str
    tpus: int
    unit_s: float
    link_bytes: float
    host_s: float
    plans: tuple[Plan, ...]
    models: tuple[PoolModel, ...]
    costs: tuple[tuple[StageCost, ...], ...]

    def alone_s(self, spec: EdgeTpuSpec) -> float:
        return terms.period_seconds(spec, [self.unit_s], self.link_bytes, None, self.host_s)


def _set_partitions(items: Sequence[int]) -> Iterator[list[tuple[int, ...]]]:
    """Every partition of ``items`` into non-empty blocks (each block in ``items``' order)."""
    if not items:
        yield []
        return
    first, rest = items[0], items[1:]
    for part in _set_partitions(rest):
        yield [(first,), *part]
        for i in range(len(part)):
            yield [*part[:i], (first, *part[i]), *part[i + 1 :]]


def _compositions(total: int, parts: int) -> Iterator[tuple[int, ...]]:
    """Every way to write ``total`` as ``parts`` positive whole numbers, in order."""
    for cuts in itertools.combinations(range(1, total), parts - 1):
        bounds = (0, *cuts, total)
        yield tuple(b - a for a, b in zip(bounds, bounds[1:]))


class _Search:
    """The options of every block on 1..N TPUs, computed once each (dedicated plans, shared groups)."""

    def __init__(
        self,
        entries: Sequence[PoolEntry],
        spec: EdgeTpuSpec,
        scheduler: str,
        share: bool,
        plans: dict[tuple[int, int], tuple[Plan, tuple[StageCost, ...]]] | None = None,
        alone: dict[tuple[int, float], StageCost] | None = None,
    ) -> None:
        self.entries, self.spec, self.scheduler, self.share = tuple(entries), spec, scheduler, share
        self.weights = [e.weight for e in entries]
        self.sequence = interleave(self.weights, HORIZON)
        self.units = HORIZON / float(sum(self.weights))
        self._plans = {} if plans is None else plans  # (model, TPUs) -> its own plan and costs: no weight in them
        self._alone = {} if alone is None else alone  # (model, cache taken) -> its whole-model cost
        self._own: dict[tuple[int, int], _Option] = {}
        self._shared: dict[tuple[tuple[int, ...], int], _Option] = {}  # a shared block on exactly n TPUs
        self._best: dict[tuple[tuple[int, ...], int], _Option] = {}  # any block on at most n TPUs

    def reweighted(self, weights: Sequence[float]) -> _Search:
        """The same search with other weights, sharing the plans and costs (which no weight enters)."""
        entries = [replace(e, weight=float(w)) for e, w in zip(self.entries, weights)]
        return _Search(entries, self.spec, self.scheduler, self.share, self._plans, self._alone)

    def best(self, block: tuple[int, ...], tpus: int) -> _Option:
        """The best option of ``block`` on at most ``tpus`` TPUs (fewer when more would not help)."""
        if (block, tpus) not in self._best:
            options = [
                self._own_plan(block[0], n) if len(block) == 1 else self._shared_best(block, n) for n in range(1, tpus + 1)
            ]
            self._best[(block, tpus)] = min(options, key=lambda o: (o.alone_s(self.spec), o.tpus))
        return self._best[(block, tpus)]

    # -- one model on TPUs of its own
    def _own_plan(self, m: int, n: int) -> _Option:
        if (m, n) not in self._own:
            self._own[(m, n)] = self._plan_own(m, n)
        return self._own[(m, n)]

    def _own_costed(self, m: int, n: int) -> tuple[Plan, tuple[StageCost, ...]]:
        """Model ``m``'s best plan on ``n`` TPUs of its own (the scheduler's pipeline with replicas), costed."""
        if (m, n) not in self._plans:
            graph, spec = self.entries[m].graph, self.spec
            try:
                plan = get_scheduler(self.scheduler)(graph, pipeline_stages(graph, n), spec)
            except RespectPassError as exc:  # no pipeline for this K: replicas of the whole model's order
                log.info("%s on %d TPUs: %s", self.entries[m].name, n, exc)
                plan = Plan((0,) * graph.num_ops, 1, self.scheduler)
            plan = with_replicas(graph, plan, n, spec)
            costs = stage_costs(graph, plan.stages, plan.num_stages, spec)
            plan = replace(
                plan,
                stage_ms=tuple(c.ms for c in costs),
                link_ms=shared_link_ms(costs, spec),
                period_ms=pipeline_period_ms(costs, spec, plan.stage_replicas),
            )
            self._plans[(m, n)] = (plan, costs)
        return self._plans[(m, n)]

    def _plan_own(self, m: int, n: int) -> _Option:
        weight = self.entries[m].weight
        plan, costs = self._own_costed(m, n)
        stages = tuple(PoolStage(c.total_s, d, FREE) for c, d in zip(costs, plan.devices()))
        model = PoolModel(
            self.entries[m].name,
            weight,
            stages,
            link_bytes=float(sum(c.link_bytes for c in costs)),
            host_s=float(sum(c.host_s for c in costs)),
        )
        busiest = max(c.total_s / r for c, r in zip(costs, plan.stage_replicas))
        return _Option(
            (m,),
            OWN,
            plan.num_tpus,
            weight * busiest,
            weight * model.link_bytes,
            weight * model.host_s,
            (plan,),
            (model,),
            (costs,),
        )

    # -- several models sharing TPUs
    def _shared_best(self, block: tuple[int, ...], n: int) -> _Option:
        if (block, n) not in self._shared:
            options = [self._shared_option(order, COCOMPILED, n) for order in self._orders(block)]
            options.append(self._shared_option(block, SEPARATE, n))
            self._shared[(block, n)] = min(options, key=lambda o: o.alone_s(self.spec))
        return self._shared[(block, n)]

    def _orders(self, block: tuple[int, ...]) -> list[tuple[int, ...]]:
        if len(block) <= ORDERS_UP_TO:
            return list(itertools.permutations(block))
        by_bytes = sorted(block, key=lambda m: self._whole(m).on_chip_bytes + self._whole(m).off_chip_bytes)
        return list(dict.fromkeys([tuple(by_bytes), tuple(reversed(by_bytes)), block]))

    def _whole(self, m: int) -> StageCost:
        return self._cost_of(self.entries[m].graph, self.spec, 0.0)

    def _cost_of(self, graph: OpGraph, spec: EdgeTpuSpec, taken: float) -> StageCost:
        """:func:`hardware.pool.whole_model_cost`, once per (model, cache taken): orders share prefixes."""
        key = (id(graph), taken)
        if key not in self._alone:
            self._alone[key] = whole_model_cost(graph, spec, taken)
        return self._alone[key]

    def _shared_option(self, order: tuple[int, ...], mode: str, n: int) -> _Option:
        spec = self.spec
        if mode == COCOMPILED:
            costs = cocompiled_costs([self.entries[m].graph for m in order], spec, self._cost_of)
            reloads = [0.0] * len(order)
        else:
            costs = tuple(self._whole(m) for m in order)
            reloads = [float(c.on_chip_bytes) for c in costs]
        switch = [float(terms.switch_seconds(spec, r)) for r in reloads]
        busy, shares = group_load(self.sequence, order, [c.total_s for c in costs], switch, n)
        devices = tuple(range(n))
        models, plans, link, host = [], [], 0.0, 0.0
        for k, (m, c) in enumerate(zip(order, costs)):
            entry = self.entries[m]
            models.append(
                PoolModel(
                    entry.name,
                    entry.weight,
                    (PoolStage(c.total_s, devices, ROUND_ROBIN),),
                    switch_s=switch[k],
                    reload_bytes=reloads[k],
                    link_bytes=float(c.link_bytes),
                    host_s=c.host_s,
                )
            )
            link += entry.weight * (c.link_bytes + shares[k] * reloads[k])
            host += entry.weight * c.host_s
            plans.append(Plan((0,) * entry.graph.num_ops, 1, f"pool-{mode}", stage_ms=(c.ms,), replicas=(n,), tpus=n))
        return _Option(
            order,
            mode,
            n,
            float(busy.max()) / self.units,
            link,
            host,
            tuple(plans),
            tuple(models),
            tuple((c,) for c in costs),
        )

    # -- the pool
    def search(self, tpus: int, own_only: bool = False) -> tuple[list[_Option], float] | None:
        """The best options (one per block) on at most ``tpus`` TPUs and their common unit time."""
        best: tuple[tuple[float, int, int], list[_Option]] | None = None
        models = list(range(len(self.entries)))
        for part in _set_partitions(models):
            if (own_only or not self.share) and any(len(b) > 1 for b in part):
                continue
            if len(part) > tpus:
                continue
            for split in _compositions(tpus, len(part)):
                chosen = [self.best(b, n) for b, n in zip(part, split)]
                unit_s = terms.period_seconds(
                    self.spec,
                    [o.unit_s for o in chosen],
                    sum(o.link_bytes for o in chosen),
                    None,
                    sum(o.host_s for o in chosen),
                )
                key = (unit_s, sum(o.tpus for o in chosen), sum(len(o.block) > 1 for o in chosen))
                if (
                    best is None
                    or key[0] < best[0][0] * (1 - REL_TOL)
                    or (key[0] <= best[0][0] * (1 + REL_TOL) and key[1:] < best[0][1:])
                ):
                    best = (key, chosen)
        return None if best is None else (best[1], best[0][0])


def _assemble(
    search: _Search,
    chosen: list[_Option],
    available: int,
    objective: str,
    own: PoolRates | None,
    entries: Sequence[PoolEntry] | None = None,
) -> PoolPlan:
    """Number the chosen options' TPUs consecutively and predict the pool with :func:`hardware.pool.pool_rates`;
    ``entries``: the plan's (the rates asked for) where ``search`` ran with other weights."""
    n = len(search.entries)
    plans: list[Plan | None] = [None] * n
    models: list[PoolModel | None] = [None] * n
    costs: list[tuple[StageCost, ...]] = [()] * n
    groups, first = [], 0
    for g, option in enumerate(chosen):
        tpus = tuple(range(first, first + option.tpus))
        groups.append(PoolGroup(tpus, option.block, option.mode))
        for m, plan, model, cost in zip(option.block, option.plans, option.models, option.costs):
            costs[m] = cost
            stages = tuple(
                replace(s, devices=tuple(d + first for d in s.devices), group=g if s.dispatch == ROUND_ROBIN else -1)
                for s in model.stages
            )
            models[m] = replace(model, stages=stages)
            plans[m] = replace(plan, first_tpu=first)
        first += option.tpus
    final_models = tuple(m for m in models if m is not None)
    rates = pool_rates(final_models, search.spec)
    # a shared model's period is the pool's: one request per weight / unit_s
    final_plans = tuple(
        replace(p, period_ms=1e3 / x) if p is not None and p.scheduler.startswith("pool-") else p
        for p, x in zip(plans, rates.throughput_ips)
    )
    return PoolPlan(
        tuple(entries) if entries is not None else search.entries,
        available,
        tuple(groups),
        tuple(p for p in final_plans if p is not None),
        final_models,
        tuple(costs),
        rates,
        objective,
        own,
    )


def _check(entries: Sequence[PoolEntry], tpus: int, share: bool) -> None:
    if not entries:
        raise RespectPassError("a pool needs at least one model")
    if len(entries) > MAX_POOL_MODELS:
        raise RespectPassError(f"a pool plans at most {MAX_POOL_MODELS} models, got {len(entries)}")
    if not 1 <= tpus <= MAX_POOL_TPUS:
        raise RespectPassError(f"number of TPUs in a pool must be between 1 and {MAX_POOL_TPUS}, got {tpus}")
    if not share and tpus < len(entries):
        raise RespectPassError(
            f"{tpus} TPU(s) for {len(entries)} models without sharing: each model needs a TPU of its own "
            "(allow sharing, or give at least as many TPUs as models)"
        )
    for e in entries:
        if not (isinstance(e.weight, (int, float)) and np.isfinite(e.weight) and e.weight > 0):
            raise RespectPassError(f"{e.name}: weight or rate must be a positive number, got {e.weight!r}")


def plan_pool(
    entries: Sequence[PoolEntry],
    tpus: int,
    spec: EdgeTpuSpec,
    scheduler: str = "respect",
    rates: bool = False,
    share: bool = True,
) -> PoolPlan:
    """Plan ``entries`` on ``tpus`` Edge TPUs (module docstring). With ``rates`` the entries' weights are
    rates (requests per second) to meet with the fewest TPUs; ``share`` False keeps every model on TPUs of
    its own. ``spec`` is used as given (localise it first, :func:`respect_pass.partition.planning_spec`)."""
    _check(entries, tpus, share)
    get_scheduler(scheduler)
    t0 = time.perf_counter()
    search = _Search(entries, spec, scheduler, share)
    alone = search.search(tpus, own_only=True) if tpus >= len(entries) else None
    own_unit = _assemble(search, alone[0], tpus, "weights", None).rates if alone is not None else None
    if not rates:
        found = search.search(tpus)
        assert found is not None  # sharing allowed or enough TPUs: _check
        plan = _assemble(search, found[0], tpus, "weights", own_unit)
        return replace(plan, solve_seconds=time.perf_counter() - t0)
    for n in range(1, tpus + 1):
        found = search.search(n)
        if found is not None and found[1] <= 1.0 * (1 + REL_TOL):
            plan = _assemble(search, found[0], tpus, "rates", own_unit)
            if min(x / e.weight for x, e in zip(plan.throughput_ips, entries)) >= 1 - 1e-6:
                return replace(plan, solve_seconds=time.perf_counter() - t0)
    plan = _short_of_rates(search, tpus, own_unit)
    return replace(plan, unmet=_unmet(search, plan, tpus), solve_seconds=time.perf_counter() - t0)


def _short_of_rates(search: _Search, tpus: int, own: PoolRates | None, steps: int = 24) -> PoolPlan:
    """The plan on every TPU where the rates cannot all be met. Where some rates are out of reach even for
    their model alone on every TPU, the others get their full rates and those models the largest common share
    of theirs beside them (bisection on that share, with the proportions of the interleave set to match);
    otherwise (or where the others cannot have their full rates either) every model the same share of its rate."""
    rates = [e.weight for e in search.entries]
    shares = [rates[m] / search.best((m,), tpus).alone_s(search.spec) / rates[m] for m in range(len(rates))]
    out = [m for m, f in enumerate(shares) if f < 1 - 1e-6]

    def attempt(share: float) -> tuple[_Search, list[_Option]] | None:
        trial = search.reweighted([r * share if m in out else r for m, r in enumerate(rates)])
        found = trial.search(tpus)
        return (trial, found[0]) if found is not None and found[1] <= 1 + REL_TOL else None

    best = attempt(1e-9) if out and len(out) < len(rates) else None
    if best is not None:
        low, high = 1e-9, min(shares[m] for m in out)
        for _ in range(steps):
            mid = (low * high) ** 0.5 if low > 0 else high / 2
            got = attempt(mid)
            if got is not None:
                low, best = mid, got
            else:
                high = mid
        return _assemble(best[0], best[1], tpus, "rates", own, search.entries)
    found = search.search(tpus)
    assert found is not None
    return _assemble(search, found[0], tpus, "rates", own)


def _unmet(search: _Search, plan: PoolPlan, tpus: int) -> tuple[str, ...]:
    """A line per rate the plan does not meet: the model's best alone on every TPU, or the shortfall together."""
    lines = []
    for m, (entry, got) in enumerate(zip(search.entries, plan.throughput_ips)):
        if got >= entry.weight * (1 - 1e-6):
            continue
        alone = search.best((m,), tpus)
        most = entry.weight / alone.alone_s(search.spec)
        if most < entry.weight * (1 - 1e-6):
            lines.append(
                f"{entry.name}: {entry.weight:g}/s cannot be met: at most {most:.4g}/s on all {tpus} TPUs alone; "
                f"{got:.4g}/s in this plan"
            )
        else:
            lines.append(f"{entry.name}: {entry.weight:g}/s not met beside the other models: {got:.4g}/s")
    return tuple(lines)
